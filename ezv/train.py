"""`python -m ezv.train --env-id Breakout-v5 [--seed 0] [--total-env-steps 100000] [--run-dir DIR] ...`

The preset comes from the env's domain (or `--preset`); every config field is a flag on top of
it (`--help` lists them with the preset's values for the given `--env-id`). The run directory
gets `config.yaml`, `metrics.jsonl` (one line per seed per `--log-interval` env steps), TensorBoard
event files and `checkpoints/`. `--resume RUN_DIR` continues a run from its newest checkpoint;
`--num-seeds N` trains seeds seed..seed+N-1 in one compiled program; `--devices D` splits the
envs and the learner batch over D local devices.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np

from ezv import __version__
from ezv.config import PRESETS, Config, ConfigError, preset_name_for, validate

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


class Diverged(RuntimeError):
    """A loss term became non-finite; the message says where."""


# --- configuration -------------------------------------------------------------------------


def config_from_dict(data: dict[str, Any], template: Any = None) -> Any:
    """Rebuild a config dataclass from its plain form (`config.yaml`), field by field."""
    template = Config() if template is None else template
    values = {}
    for field in dataclasses.fields(template):
        if field.name not in data:
            continue  # a field added since the run was written keeps its default
        default, value = getattr(template, field.name), data[field.name]
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = config_from_dict(value, default)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif field.name in ("conv_head_hidden", "mlp_head_hidden") and isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return dataclasses.replace(template, **values)


def config_from_plain(data: dict[str, Any]) -> Config:
    """A run's config from its plain form: its preset's values, overridden by every saved field.
    A field a config was saved without takes the value that ezv used before the field existed."""
    preset = dataclasses.replace(PRESETS[data["preset"]](), env_id=data["env_id"])
    search = data.get("search")
    if isinstance(search, dict) and "q_normalisation" not in search:
        data = {**data, "search": {**search, "q_normalisation": "node"}}  # mctx's rule until 2026-12
    return config_from_dict(data, preset)


def load_run_config(run_dir: str) -> Config:
    import yaml

    if not os.path.isdir(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no such directory.")
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"--resume {run_dir!r}: it has no config.yaml, so it is not an ezv run directory.")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)["config"]
        cfg = config_from_plain(data)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise ConfigError(f"--resume {run_dir!r}: config.yaml cannot be read ({type(e).__name__}: {e}).") from e
    check_env_protocol_unchanged(run_dir, data, cfg)
    return cfg


def check_env_protocol_unchanged(run_dir: str, data: dict[str, Any], cfg: Config) -> None:
    """Runs started before 2026-12-03 (their config has no `search.q_normalisation`) stepped envpool
    DMC by physics sub-steps and ended Atari training games at 3000 agent steps."""
    from ezv.envs import backend_of

    if "q_normalisation" in (data.get("search") or {}) or not backend_of(cfg.env_id).startswith("envpool"):
        return
    if backend_of(cfg.env_id) == "envpool-dmc":
        raise ConfigError(
            f"--resume {run_dir!r}: this {cfg.env_id} run was started before ezv repeated whole DMC control "
            "steps (it stepped physics sub-steps, with rewards on a 0-500 scale); continuing it would change "
            "the task under the agent. Start a new run."
        )
    print(f"note: {run_dir} was started when Atari training games ended at 3000 agent steps; it continues "
          "with games of up to 100,000 agent steps (the reference's protocol).", file=sys.stderr)


def resolve_config(argv: Sequence[str]) -> Config:
    """Parse flags on top of the preset for the env (two passes: env id and preset first), or on
    top of a run directory's config with `--resume`."""
    import tyro

    import ezv.envs as envs

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env-id", "--env_id", default=None)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--resume", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.resume:
        saved = load_run_config(known.resume)
        for flag, value, was in (("--env-id", known.env_id, saved.env_id), ("--preset", known.preset, saved.preset)):
            if value is not None and value != was:
                raise ConfigError(f"--resume {known.resume!r} is a {was!r} run; {flag} {value} cannot change that. "
                                  "Start a new run without --resume instead.")
        default = dataclasses.replace(saved, resume=known.resume, run_dir=known.resume)
        return tyro.cli(Config, default=default, args=list(argv), description=__doc__)
    env_id = known.env_id or Config.env_id
    preset_flag = known.preset or "auto"
    if preset_flag == "auto":
        preset = preset_name_for(envs.domain_of(env_id), envs.has_continuous_actions(env_id))
    elif preset_flag in PRESETS:
        preset = preset_flag
    else:
        raise ConfigError(f"unknown --preset {preset_flag!r}; choose one of: auto, {', '.join(PRESETS)}.")
    default = dataclasses.replace(PRESETS[preset](), env_id=env_id)
    cfg = tyro.cli(Config, default=default, args=list(argv), description=__doc__)
    return dataclasses.replace(cfg, preset=preset)


def check_run_settings(cfg: Config) -> None:
    """Run-level settings (checkpoints, seeds) that `validate` does not cover."""
    errors = []
    every = cfg.checkpoint_every
    if every < 0 or (every and every % cfg.log_interval):
        errors.append(f"--checkpoint-interval ({every}) must be 0 (only at the end) or a positive multiple of "
                      f"--log-interval ({cfg.log_interval}).")
    if cfg.keep_checkpoints < 1:
        errors.append(f"--keep-checkpoints must be >= 1 (got {cfg.keep_checkpoints}).")
    if cfg.resume_step is not None and not cfg.resume:
        errors.append("--resume-step needs --resume RUN_DIR.")
    if cfg.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            errors.append("--wandb needs the wandb package: pip install wandb (or drop --wandb).")
    if errors:
        raise ConfigError("\n".join(errors))


# --- the run ----------------------------------------------------------------------------------


def _eval_row(result: dict[str, Any]) -> dict[str, float]:
    finished = np.asarray(result["finished"])
    returns = np.asarray(result["returns"])[finished]
    if returns.size == 0:
        return {"eval_episodes": 0}
    return {
        "eval_return_mean": float(returns.mean()),
        "eval_return_std": float(returns.std()),
        "eval_episodes": int(returns.size),
        "eval_length_mean": float(np.asarray(result["lengths"])[finished].mean()),
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _check_finite(program, metrics_per_seed: list[dict], updates_before: int, env_steps: int, offline: bool) -> None:
    from ezv.agent import first_nonfinite

    for i, m in enumerate(metrics_per_seed):
        if offline:
            m = {**m, "learning": np.ones_like(np.asarray(m["loss"]))}
        found = first_nonfinite(m)
        if found is not None:
            count, term = found
            seed = program.cfg.seed + i
            where = "in the offline phase" if offline else f"while collecting env steps up to {env_steps}"
            raise Diverged(f"{term} became non-finite at update {updates_before + count + 1} {where} (seed {seed}).")


def train(cfg: Config) -> str:
    """Run training to the end (or continue a run with `cfg.resume`); returns the run directory."""
    from ezv import checkpoint as ckpt, logger
    from ezv.agent import summarize_chunk
    from ezv.program import Program

    check_run_settings(cfg)
    resuming = cfg.resume is not None
    if resuming:
        run_dir, step = ckpt.locate(cfg.resume) if cfg.resume_step is None else (cfg.resume, cfg.resume_step)
        if step not in ckpt.available_steps(run_dir):
            raise ckpt.CheckpointError(f"no complete checkpoint {step} in {ckpt.checkpoint_dir(run_dir)!r}; complete "
                                       f"ones: {ckpt.available_steps(run_dir) or 'none'}.")
        meta = ckpt.read_meta(run_dir, step)
        diffs = ckpt.config_differences(meta["config"], ckpt.plain_config(cfg))
        if diffs:
            raise ckpt.CheckpointError(f"checkpoint {step} of {run_dir!r} was made with another config:\n  "
                                       + "\n  ".join(diffs))
    # Builds the envs (unknown ids and options fail here). A resumed envpool run reseeds its pool,
    # whose state could not be saved, so that it does not replay the first run's episodes.
    program = Program(cfg, env_seed_offset=meta["env_steps"] if resuming else 0)
    agent = program.agent
    spec = program.env.spec
    validate(cfg, spec.action_space.n if spec.discrete else None, continuous=not spec.discrete)
    if not resuming:
        run_dir = logger.create_run_dir(cfg.run_dir or logger.default_run_dir(cfg.env_id, cfg.seed))
    cfg = dataclasses.replace(cfg, run_dir=run_dir)
    from ezv.inference import spec_to_dict

    extra = {
        "env_spec": dataclasses.asdict(spec),
        "agent_spec": spec_to_dict(spec),  # what `ezv.export` needs to rebuild the network
        "derived": {
            "num_simulations": agent.num_simulations,
            "max_considered_actions": agent.considered,
            "updates_per_iteration": cfg.updates_per_iteration,
            "learn_every_iterations": cfg.learn_every,
            "total_updates": cfg.total_updates,
            "seeds": [cfg.seed + i for i in range(cfg.num_seeds)],
        },
        "versions": {"ezv": __version__, "jax": jax.__version__},
        "device": str(jax.devices()[0]),
    }
    start = time.perf_counter()
    if resuming:
        # Restored before anything in the run directory changes: a bad checkpoint leaves it as it was.
        state = ckpt.restore_state(run_dir, step, program.abstract_state())
    progress = logger.Progress(cfg.total_env_steps, cfg.quiet)
    if resuming:
        env_steps, offline_done, wall0 = meta["env_steps"], meta["offline_updates_done"], meta.get("wall_s", 0.0)
        if not program.pure:
            state = program.restart_envs(state, jax.random.PRNGKey(cfg.seed + 20_000 + env_steps))
            progress.print(f"{spec.backend}'s env state lives outside JAX: the envs restart from fresh episodes "
                           "(the replay, networks, optimiser and counters are restored).")
        logger.rewind_metrics(run_dir, step)
        for moved in ckpt.set_aside_after(run_dir, step):
            progress.print(f"a checkpoint newer than {step} was moved to {moved}")
        progress.print(f"resumed {run_dir} from checkpoint {step} ({env_steps} env steps, {program.updates(state)} "
                       "updates)")
    else:
        state, step, env_steps, offline_done, wall0 = program.init(), 0, 0, 0, 0.0
    logger.write_config(run_dir, cfg, extra, keep_previous=resuming)
    log = logger.RunLog(run_dir, cfg, purge_step=step if resuming else None)
    progress.print(f"ezv {cfg.env_id} ({cfg.preset} preset, {cfg.num_seeds} seed(s), {cfg.devices} device(s)), "
                   f"run dir {run_dir}")
    checkpointer = ckpt.Checkpointer(run_dir, cfg.keep_checkpoints)
    last_saved = step if resuming else None

    def save(progress_step: int) -> None:
        nonlocal last_saved
        meta = {"env_steps": env_steps, "updates": program.updates(state), "offline_updates_done": offline_done,
                "wall_s": wall(), "config": ckpt.plain_config(cfg), "backend": spec.backend, "ezv": __version__}
        checkpointer.save(progress_step, state, program.model_variables(state), meta)
        last_saved = progress_step

    def wall() -> float:
        return round(wall0 + time.perf_counter() - start, 3)

    last_eval: float | None = None

    def evaluate(rows: list[dict]) -> None:
        nonlocal last_eval
        for row, result in zip(rows, program.evaluate(state, env_steps)):
            row.update(_eval_row(result))
        last_eval = _mean([r.get("eval_return_mean") for r in rows])

    def record(rows: list[dict], evaluate_now: bool, env_rate: float, update_rate: float, save_at: int | None) -> None:
        if evaluate_now:
            evaluate(rows)
        for row in rows:
            row["wall_s"] = wall()
        log.write(rows)
        progress.update(rows, env_rate, update_rate, last_eval)
        if save_at is not None:
            save(save_at)

    seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    every = cfg.checkpoint_every
    try:
        if env_steps < cfg.total_env_steps:
            compiled_start = time.perf_counter()
            program.compile(state)
            progress.print(f"compiled the training chunk in {time.perf_counter() - compiled_start:.1f}s")
        previous_time = time.perf_counter()
        updates = program.updates(state)
        while env_steps < cfg.total_env_steps:
            updates_before = updates
            state, metrics = program.chunk(state)
            per_seed = program.seed_metrics(metrics)
            env_steps = program.env_steps(state)
            _check_finite(program, per_seed, updates_before, env_steps, offline=False)
            updates = program.updates(state)
            now = time.perf_counter()
            rates = {"env_steps_per_s": cfg.log_interval / (now - previous_time),
                     "updates_per_s": (updates - updates_before) / (now - previous_time)}
            rows = [{"seed": s, "env_steps": env_steps, "updates": updates, **summarize_chunk(m), **rates}
                    for s, m in zip(seeds, per_seed)]
            done = env_steps >= cfg.total_env_steps
            record(rows, env_steps % cfg.eval_interval == 0 or done, rates["env_steps_per_s"], rates["updates_per_s"],
                   env_steps if (every and env_steps % every == 0) or done else None)
            previous_time = time.perf_counter()

        if offline_done < cfg.offline_updates:
            progress.print(f"collection done; {cfg.offline_updates - offline_done} offline updates")
        block = min(1_000, every or 1_000)
        updates = program.updates(state)
        while offline_done < cfg.offline_updates:
            # Blocks end on checkpoint boundaries, so a resumed offline phase repeats the same blocks.
            count = min(block - offline_done % block, cfg.offline_updates - offline_done)
            state, metrics = program.offline(state, count)
            per_seed = program.seed_metrics(metrics)
            _check_finite(program, per_seed, updates, env_steps, offline=True)
            offline_done += count
            updates += count
            rate = count / max(time.perf_counter() - previous_time, 1e-9)
            rows = [{"seed": s, "env_steps": env_steps, "updates": updates, "offline": True,
                     "offline_updates": offline_done, **{k: float(np.mean(v)) for k, v in m.items()}}
                    for s, m in zip(seeds, per_seed)]
            done = offline_done == cfg.offline_updates
            record(rows, done, 0.0, rate, env_steps + offline_done if (every and offline_done % every == 0) or done
                   else None)
            previous_time = time.perf_counter()
    except Diverged as e:
        where = (f"the last good checkpoint is {os.path.join(ckpt.checkpoint_dir(run_dir), str(last_saved))}"
                 if last_saved is not None else "no checkpoint was written before it")
        raise Diverged(f"{e} The run stops; {where} (nothing after it was saved).") from None
    finally:
        progress.close()
        log.close()
        checkpointer.close()
    print(f"done in {time.perf_counter() - start:.0f}s; final eval return {last_eval}; metrics in {run_dir}/metrics.jsonl")
    return run_dir


def main(argv: Sequence[str] | None = None) -> None:
    import ezv.envs as envs
    from ezv.checkpoint import CheckpointError

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = resolve_config(argv)
        train(cfg)
    except (ConfigError, CheckpointError, envs.UnknownEnvError, envs.EnvOptionError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Diverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


if __name__ == "__main__":
    main()
