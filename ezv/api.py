"""ezv from Python: one object per run, over the same functions as the CLI (`ezv.train`, `ezv.evaluate`,
`ezv.export`), so a run started here continues from the CLI and the other way round.

    agent = ezv.Agent("CartPole-v1", total_env_steps=20_000, learner__batch_size=128)   # preset + overrides
    summary = agent.train()                  # compile and run (a progress bar); a TrainSummary
    result = agent.evaluate(episodes=32)     # returns, mean ± std, human-normalised score on Atari
    agent.record("cartpole.gif")             # one greedy episode as a video
    paths = agent.export("agents/")          # an agent file and its model card per seed
    agent.best.evaluate()                    # the networks of the best evaluation so far
    agent.metrics.to_pandas()                # metrics.jsonl as a table

    ezv.Agent.from_run("runs/CartPole-v1-s0-...")   # a run directory: evaluate it, or train on
    ezv.Agent.from_file("CartPole-v1-s0-e20000-t9000.ezv")   # an exported agent: evaluate, act, record, export

`train(env_steps)` takes an absolute step count, as `--total-env-steps` does with `--resume` (and LightZero's
`train(step)`): the run collects until it has `env_steps` env steps. Below the run's budget
(`total_env_steps`) that is a pause: the run checkpoints there and a later `train()` continues it as if it had
not stopped (the learning-rate, temperature and value-target schedules follow the budget; exactly so on a
pure-JAX env, while envpool and gymnasium envs restart from fresh episodes as on any resume). Above it, the
budget grows to `env_steps` (and the schedules with it, from then on).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import numpy as np

from ezv.config import RUN_SETTINGS, Config, ConfigError, load_run_config, make_config


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """Where a `train()` call left the run."""

    run_dir: str
    env_steps: int
    updates: int
    offline_updates: int
    finished: bool  # the budget and the offline updates are done (False: paused)
    eval_return_mean: float | None  # the newest evaluation's mean return over seeds
    wall_s: float  # training time of the run so far, across resumes


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Greedy-search evaluation episodes per seed, under the env's evaluation protocol."""

    env_id: str
    seeds: tuple[int, ...]
    returns: tuple[np.ndarray, ...]  # per seed, the scored (finished) episodes' returns
    lengths: tuple[np.ndarray, ...]
    unfinished: int  # episodes that did not finish within the env's cap, over all seeds

    @property
    def all_returns(self) -> np.ndarray:
        return np.concatenate(self.returns) if self.returns else np.zeros(0)

    @property
    def mean(self) -> float:
        """Mean return over every scored episode of every seed."""
        return float(self.all_returns.mean()) if self.all_returns.size else float("nan")

    @property
    def std(self) -> float:
        return float(self.all_returns.std()) if self.all_returns.size else float("nan")

    @property
    def seed_means(self) -> np.ndarray:
        return np.array([r.mean() if r.size else np.nan for r in self.returns])

    @property
    def human_normalized(self) -> float | None:
        """Atari 100k games: (mean - random) / (human - random); None elsewhere."""
        from ezv import scores

        game = scores.atari_game(self.env_id)
        return None if game is None or not self.all_returns.size else scores.human_normalized(game, self.mean)

    def __str__(self) -> str:
        text = (f"{self.env_id}: return {self.mean:.2f} ± {self.std:.2f} over {self.all_returns.size} episodes, "
                f"{len(self.seeds)} seed(s)")
        if self.human_normalized is not None:
            text += f", human-normalised {self.human_normalized:.3f}"
        return text + (f" ({self.unfinished} unfinished)" if self.unfinished else "")


class MetricsTable:
    """A run's metrics.jsonl rows as a small column table: `table["eval_return_mean"]` is a float array (NaN
    where a row lacks the column), `table.evaluations` the rows that carry an evaluation, `to_pandas()`."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for row in self.rows for k in row))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.columns:
            raise KeyError(f"no column {column!r}; columns: {', '.join(self.columns)}")
        values = [row.get(column) for row in self.rows]
        if all(v is None or isinstance(v, (int, float, bool)) for v in values):
            return np.array([np.nan if v is None else v for v in values], dtype=float)
        return np.array(values, dtype=object)

    @property
    def evaluations(self) -> MetricsTable:
        return MetricsTable([r for r in self.rows if r.get("eval_return_mean") is not None])

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def __repr__(self) -> str:
        return f"MetricsTable({len(self.rows)} rows; columns: {', '.join(self.columns)})"


class Agent:
    """One run of ezv (its config, its run directory once trained) or one exported agent file per seed.

    `Agent(env_id, preset="auto", **overrides)`: the config `python -m ezv.train --env-id ENV_ID` would run,
    with any field overridden (`seed=1`, `total_env_steps=50_000`, `learner__batch_size=128`,
    `search={"num_simulations": 32}`, `env_options={...}`); `ezv.config.Config` lists the fields. Bad fields
    and impossible settings raise a ConfigError here, before anything compiles."""

    def __init__(self, env_id: str | None = None, *, preset: str = "auto", **overrides: Any):
        import ezv.envs as envs
        from ezv.config import validate

        self.config: Config = make_config(env_id, preset, **overrides)
        validate(self.config, envs.spec_of(self.config.env_id, **self.config.env_options))
        self.run_dir: str | None = None
        self._checkpoint: int | None = None  # a checkpoint step chosen with from_run (None: the newest)
        self._files: list[str] | None = None  # agent files (from_file, best)
        self._loaded: tuple | None = None  # (cfg, spec, variables per seed, info, seeds)
        self._inference: dict[int, Any] = {}

    # --- other ways in -------------------------------------------------------------------------

    @classmethod
    def _blank(cls, config: Config) -> Agent:
        agent = cls.__new__(cls)
        agent.config, agent.run_dir, agent._checkpoint, agent._files = config, None, None, None
        agent._loaded, agent._inference = None, {}
        return agent

    @classmethod
    def from_run(cls, run_dir: str, step: int | None = None) -> Agent:
        """A run directory written by `ezv.train` or `Agent.train` (or one of its checkpoint folders): its newest
        checkpoint (or `step`) is what `evaluate`/`act`/`export` use, and `train()` continues the run from its
        newest checkpoint."""
        from ezv import checkpoint as ckpt

        path = os.path.normpath(run_dir)
        in_checkpoints = os.path.basename(os.path.dirname(path)) == "checkpoints"
        if step is None and in_checkpoints and os.path.basename(path).isdigit():
            run_dir, step = ckpt.locate(path)  # a checkpoint folder, RUN_DIR/checkpoints/<step>
        agent = cls._blank(load_run_config(run_dir))
        agent.config = dataclasses.replace(agent.config, run_dir=run_dir, resume=None, resume_step=None)
        agent.run_dir = run_dir
        if step is not None and step not in ckpt.available_steps(run_dir):
            raise ckpt.CheckpointError(f"{run_dir!r} has no complete checkpoint {step}; complete ones: "
                                       f"{ckpt.available_steps(run_dir) or 'none'}.")
        agent._checkpoint = step
        return agent

    @classmethod
    def from_file(cls, *paths: str) -> Agent:
        """Exported agent files (`python -m ezv.export`, `Agent.export`, RUN_DIR/best/seed*.ezv), one per seed,
        all from the same config. They hold networks only: such an agent evaluates, acts, records and exports,
        but does not train (no optimiser, replay or counters: continue from the run directory instead)."""
        from ezv.evaluate import load_source

        if not paths:
            raise ValueError("Agent.from_file needs at least one agent file.")
        loaded = [load_source(p) for p in paths]
        cfg, spec = loaded[0][0], loaded[0][1]
        from ezv.config import resume_differences, to_plain

        for path, (other, *_rest) in zip(paths[1:], loaded[1:]):
            differences = [d for d in resume_differences(to_plain(cfg), to_plain(other)) if not d.startswith("seed:")]
            if differences:
                raise ValueError(f"{path!r} and {paths[0]!r} were trained with other configs, so they are not one "
                                 "agent's seeds:\n  " + "\n  ".join(differences))
        seeds = [s for item in loaded for s in item[4]]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the agent files hold seeds {seeds}: one file per seed.")
        agent = cls._blank(cfg)
        agent._files = list(paths)
        agent._loaded = (cfg, spec, [v for item in loaded for v in item[2]], [item[3] for item in loaded], seeds)
        return agent

    # --- training ------------------------------------------------------------------------------

    def train(self, env_steps: int | None = None, **run_settings: Any) -> TrainSummary:
        """Run the compiled program until the run has `env_steps` env steps (default: its whole budget,
        `total_env_steps`, then its offline updates); see the module docstring for pausing and extending.
        `run_settings`: fields of how the run is driven that may change between calls (`quiet`,
        `eval_interval`, `eval_episodes`, `checkpoint_interval`, `keep_checkpoints`, `offline_updates`, ...)."""
        from ezv import checkpoint as ckpt, compile_cache
        from ezv.run import Run

        if self._files is not None:
            raise ValueError("this Agent was loaded from agent files, which hold the networks only (no optimiser, "
                             "replay or counters); continue training with ezv.Agent.from_run(RUN_DIR), or start a new "
                             "ezv.Agent.")
        fixed = sorted(set(run_settings) - RUN_SETTINGS - {"total_env_steps"})
        if fixed:
            raise ConfigError(f"train() takes run settings only; {', '.join(fixed)} change what the run learns (set "
                              "them when creating the Agent).")
        placed = sorted(set(run_settings) & {"run_dir", "resume", "resume_step"})
        if placed:
            raise ConfigError(f"train() does not move a run ({', '.join(placed)}): give run_dir when creating the "
                              "Agent, and continue a run with ezv.Agent.from_run(RUN_DIR).train().")
        cfg = dataclasses.replace(self.config, **run_settings)
        pause = None
        if env_steps is not None:
            if env_steps < 1:
                raise ConfigError(f"train({env_steps}): env_steps is the run's total to reach, >= 1.")
            if env_steps > cfg.total_env_steps:
                cfg = dataclasses.replace(cfg, total_env_steps=env_steps)
            elif env_steps < cfg.total_env_steps:
                pause = env_steps
            if env_steps % cfg.log_interval:
                raise ConfigError(f"train({env_steps}): env_steps must be a multiple of log_interval "
                                  f"({cfg.log_interval}), the env steps of one compiled chunk.")
        where = self.run_dir or cfg.run_dir
        resuming = where is not None and bool(ckpt.available_steps(where))
        if resuming and self.run_dir is None:
            raise FileExistsError(f"{where!r} already holds a run; continue it with ezv.Agent.from_run({where!r})"
                                  ".train(), or give this Agent another run_dir.")
        if not resuming and where and os.path.isfile(os.path.join(where, "config.yaml")):
            raise FileExistsError(f"{where!r} holds a run that wrote no checkpoint, so there is nothing to continue; "
                                  "give this Agent another run_dir.")
        if resuming:
            cfg = dataclasses.replace(cfg, run_dir=self.run_dir, resume=self.run_dir, resume_step=None)
        compile_cache.enable()
        run = Run(cfg)
        self.run_dir, self._loaded, self._inference = run.run_dir, None, {}  # kept if the run is interrupted
        self.config = dataclasses.replace(run.cfg, resume=None, resume_step=None)
        run_dir = run.execute(pause_at=pause)
        self.config = dataclasses.replace(run.cfg, resume=None, resume_step=None)
        self.run_dir, self._checkpoint, self._loaded, self._inference = run_dir, None, None, {}
        finished = run.env_steps >= run.cfg.total_env_steps and run.offline_done >= run.cfg.offline_updates
        return TrainSummary(run_dir=run_dir, env_steps=run.env_steps, updates=run.program.updates(run.state),
                            offline_updates=run.offline_done, finished=finished, eval_return_mean=run.last_eval,
                            wall_s=run.wall())

    # --- what was trained ------------------------------------------------------------------------

    def _source(self) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any] | list[dict[str, Any]], list[int]]:
        if self._loaded is None:
            from ezv.export import load_checkpoint_agents

            self._loaded = load_checkpoint_agents(self._checkpoint_path())
        return self._loaded

    def _checkpoint_path(self) -> str:
        """The run directory (its newest checkpoint) or the chosen checkpoint's folder."""
        from ezv import checkpoint as ckpt

        if self.run_dir is None:
            raise ValueError("this Agent has no networks yet: call train() first (or load one with "
                             "Agent.from_run / Agent.from_file).")
        if self._checkpoint is None:
            return self.run_dir
        return os.path.join(ckpt.checkpoint_dir(self.run_dir), str(self._checkpoint))

    @property
    def seeds(self) -> list[int]:
        """The seeds this agent holds networks of (a `num_seeds` run: several)."""
        return list(self._source()[4]) if (self._loaded or self.run_dir) else [
            self.config.seed + i for i in range(self.config.num_seeds)]

    @property
    def spec(self):
        """The env's `EnvSpec`."""
        if self._loaded or self.run_dir:
            return self._source()[1]
        import ezv.envs as envs

        return envs.spec_of(self.config.env_id, **self.config.env_options)

    def _seed_index(self, seed: int | None) -> int:
        seeds = self.seeds
        if seed is None:
            return 0
        if seed not in seeds:
            raise ValueError(f"no networks of seed {seed}; this agent has seeds {seeds}.")
        return seeds.index(seed)

    def evaluate(self, episodes: int = 32, seed: int = 0, delay: int | None = None) -> Evaluation:
        """`episodes` greedy-search episodes per trained seed (`seed`: of the episodes), as `python -m ezv.evaluate`;
        `delay`: at that execution delay instead of the run's own."""
        from ezv.evaluate import evaluate_variables

        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}.")
        cfg, _, variables, _, seeds = self._source()
        results = evaluate_variables(cfg, variables, episodes, seed, delay)
        returns, lengths, unfinished = [], [], 0
        for result in results:
            finished = np.asarray(result["finished"])
            returns.append(np.asarray(result["returns"], float)[finished])
            lengths.append(np.asarray(result["lengths"])[finished])
            unfinished += int((~finished).sum())
        return Evaluation(cfg.env_id, tuple(seeds), tuple(returns), tuple(lengths), unfinished)

    def act(
        self, obs: Any, key: jax.Array, *, seed: int | None = None, pending: Any = None, delay: Any = None
    ) -> jax.Array:
        """Actions of the greedy search for `obs` ([N, *obs_shape] or one observation), as `ezv.load_agent(file)`
        gives them; `seed`: which trained seed's networks (default the first); `pending`, `delay`: plan through an
        execution delay's pending actions (`LoadedAgent.act`)."""
        from ezv.inference import LoadedAgent

        index = self._seed_index(seed)
        if index not in self._inference:
            cfg, spec, variables, _, _ = self._source()
            self._inference[index] = LoadedAgent(cfg, spec, variables[index])
        return self._inference[index].act(obs, key, pending=pending, delay=delay)

    def record(self, path: str, seed: int = 0, agent_seed: int | None = None) -> int:
        """Play one greedy episode (episode seed `seed`) and write it to `path` (.mp4 or .gif); returns its length."""
        from ezv.evaluate import check_video, record_video

        cfg, spec, variables, _, _ = self._source()
        check_video(spec, path)
        return record_video(cfg, spec, variables[self._seed_index(agent_seed)], path, seed)

    def export(self, out_dir: str | None = None) -> list[str]:
        """An agent file (`{env}-s{seed}-e{env_steps}-t{train_steps}.ezv`) and its model card (`.md`) per seed,
        in `out_dir` (default: the run directory, or the agent file's folder); returns the agent files."""
        from ezv.export import export_run, write_agents

        if self._files is None:  # export_run reads the checkpoint itself
            return export_run(self._checkpoint_path(), out_dir)
        cfg, spec, variables, info, seeds = self._source()
        infos = [{**meta, "seed": meta.get("seed", s), "env_steps": meta.get("env_steps", 0),
                  "train_steps": meta.get("train_steps", 0)} for meta, s in zip(info, seeds)]
        return write_agents(cfg, spec, variables, infos, out_dir or os.path.dirname(os.path.abspath(self._files[0])))

    @property
    def best(self) -> Agent:
        """The networks of each seed's best evaluation so far (RUN_DIR/best/, kept whatever --keep-checkpoints
        says), as an Agent that evaluates, acts, records and exports."""
        from ezv.best import best_file, read_index

        if self.run_dir is None:
            raise ValueError("no run yet: best is the best evaluation's networks of a run (train() first).")
        index = read_index(self.run_dir)
        if not index:
            raise ValueError(f"{self.run_dir} has no evaluation yet, so no best networks.")
        return Agent.from_file(*[best_file(self.run_dir, seed) for seed in sorted(index)])

    @property
    def metrics(self) -> MetricsTable:
        """The run's metrics.jsonl (one row per seed per chunk; evaluations in the `eval_*` columns)."""
        from ezv.logger import read_rows

        if self.run_dir is None:
            raise ValueError("no run yet: train() first (or Agent.from_run).")
        return MetricsTable(list(read_rows(self.run_dir)))

    def __repr__(self) -> str:
        where = (f"files {self._files}" if self._files else f"run {self.run_dir}" if self.run_dir else "not trained")
        return f"Agent({self.config.env_id!r}, preset {self.config.preset!r}, seed {self.config.seed}, {where})"
