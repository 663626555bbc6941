"""A training run on the host: the compiled program driven chunk by chunk, with logs, evaluations
and checkpoints.

    run = Run(cfg)          # builds the envs and the program; starts a run dir or restores a checkpoint
    run_dir = run.execute() # collection to `total_env_steps`, then the offline updates

Everything on device happens in `ezv.program.Program`; this module only decides when to call it
and what to write: a `metrics.jsonl` row per seed per chunk, evaluations every `eval_interval`
env steps and at the end, checkpoints every `checkpoint_every` env steps (or updates, offline) and
at the end. A divergence stops the run and names the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from ezv import __version__, checkpoint as ckpt, distributed, logger
from ezv.best import BestKeeper
from ezv.config import Config, ConfigError, config_from_plain, resume_differences, to_plain, write_run_config
from ezv.envs.core import spec_to_dict
from ezv.metrics import Diverged, check_finite, eval_row, mean_present, summarize_chunk
from ezv.program import Program


def run_metadata(cfg: Config, program: Program) -> dict[str, Any]:
    """What `config.yaml` records beside the config: the env spec and the values derived from both."""
    model = program.agent.model
    return {
        "env_spec": spec_to_dict(program.env.spec),  # what `ezv.export` needs to rebuild the network
        "derived": {
            "num_simulations": model.num_simulations,
            "max_considered_actions": model.considered,
            "updates_per_iteration": cfg.updates_per_iteration,
            "learn_every_iterations": cfg.learn_every,
            "total_updates": cfg.total_updates,
            "seeds": [cfg.seed + i for i in range(cfg.num_seeds)],
        },
        "versions": {"ezv": __version__, "jax": jax.__version__},
        "device": str(jax.devices()[0]),
        "processes": jax.process_count(),
    }


class Run:
    """The host loop's state: the program and its device state, the counters, the log and checkpointer."""

    def __init__(self, cfg: Config):
        self.resuming = cfg.resume is not None
        meta = self._checkpoint_to_resume(cfg) if self.resuming else None
        # Builds the envs (unknown ids and options fail here). A resumed envpool run reseeds its pool,
        # whose state could not be saved, so that it does not replay the first run's episodes.
        self.program = Program(cfg, env_seed_offset=meta["env_steps"] if self.resuming else 0)
        self.spec = self.program.env.spec
        self.writer = distributed.is_writer()  # process 0 of a multi-process run; the process otherwise
        if not self.resuming:
            # One process creates the run directory (a default one is named by the clock) and all use it.
            self.run_dir = distributed.agree(
                lambda: logger.create_run_dir(cfg.run_dir or logger.default_run_dir(cfg.env_id, cfg.seed)),
                "creating the run directory")
            self.step = 0
        self.cfg = cfg = dataclasses.replace(cfg, run_dir=self.run_dir)
        self.started = time.perf_counter()
        # Restored before anything in the run directory changes, and before the progress display
        # takes the terminal: a bad checkpoint leaves both as they were.
        restored = ckpt.restore_state(self.run_dir, self.step, self.program.abstract_state()) if self.resuming else None
        self.progress = logger.Progress(cfg.total_env_steps, cfg.quiet, silent=not self.writer)
        try:
            if self.resuming:
                self._continue_from(restored, meta)
            else:
                self.state, self.env_steps, self.offline_done, self.wall0 = self.program.init(), 0, 0, 0.0
            if self.writer:
                write_run_config(self.run_dir, cfg, run_metadata(cfg, self.program), keep_previous=self.resuming)
            self.log = (logger.RunLog(self.run_dir, cfg, purge_step=self.step if self.resuming else None)
                        if self.writer else logger.NoLog())
        except BaseException:
            self.progress.close()
            raise
        self.progress.print(f"ezv {cfg.env_id} ({cfg.preset} preset, {cfg.num_seeds} seed(s), {cfg.devices} "
                            f"device(s)), run dir {self.run_dir}")
        distributed.barrier("ezv-run-ready")  # process 0 has moved whatever a resume sets aside
        self.checkpointer = ckpt.Checkpointer(self.run_dir, cfg.keep_checkpoints)
        self.best = (BestKeeper(self.run_dir, cfg, self.spec, resumed_at=self.step if self.resuming else None)
                     if self.writer else None)
        self.last_saved = self.step if self.resuming else None
        self.pause_at: int | None = None
        self.last_eval: float | None = None
        self.seeds = [cfg.seed + i for i in range(cfg.num_seeds)]

    # --- start or resume ---------------------------------------------------------------------

    def _checkpoint_to_resume(self, cfg: Config) -> dict[str, Any]:
        """The checkpoint's metadata, after checking it exists and was made with this config."""
        # Process 0 picks the newest checkpoint for all (a shared filesystem may show them late elsewhere).
        run_dir, step = ((cfg.resume, cfg.resume_step) if cfg.resume_step is not None else
                         distributed.agree(lambda: list(ckpt.locate(cfg.resume)), "finding the checkpoint",
                                           ckpt.CheckpointError))
        if step not in ckpt.available_steps(run_dir):
            raise ckpt.CheckpointError(f"no complete checkpoint {step} in {ckpt.checkpoint_dir(run_dir)!r}; complete "
                                       f"ones: {ckpt.available_steps(run_dir) or 'none'}.")
        meta = ckpt.read_meta(run_dir, step)
        # Completed as its config.yaml is (fields added since it was saved take their earlier values).
        try:
            saved = to_plain(config_from_plain(meta["config"]))
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ckpt.CheckpointError(f"checkpoint {step} of {run_dir!r} has a config that cannot be read "
                                       f"({type(e).__name__}: {e}); complete checkpoints: "
                                       f"{ckpt.available_steps(run_dir)}.") from None
        diffs = resume_differences(saved, to_plain(cfg))
        if diffs:
            raise ckpt.CheckpointError(f"checkpoint {step} of {run_dir!r} was made with another config:\n  "
                                       + "\n  ".join(diffs))
        self.run_dir, self.step = run_dir, step
        return meta

    def _continue_from(self, state: Any, meta: dict[str, Any]) -> None:
        """Take up a restored state: counters from the checkpoint, fresh envpool episodes, metrics
        rewound to the checkpoint, newer checkpoints set aside."""
        program, step = self.program, self.step
        self.state = state
        self.env_steps, self.offline_done = meta["env_steps"], meta["offline_updates_done"]
        self.wall0 = meta.get("wall_s", 0.0)
        if not program.pure:
            self.state = program.restart_envs(self.state, jax.random.PRNGKey(self.cfg.seed + 20_000 + self.env_steps))
            self.progress.print(f"{self.spec.backend}'s env state lives outside JAX: the envs restart from fresh "
                                "episodes (the replay, networks, optimiser and counters are restored).")
        if meta.get("processes", 1) != distributed.process_count():
            self.progress.print(distributed.count_changed(step, meta.get("processes", 1), self.cfg.devices))
        if not self.writer:
            return
        logger.rewind_metrics(self.run_dir, step)
        for moved in ckpt.set_aside_after(self.run_dir, step):
            self.progress.print(f"a checkpoint newer than {step} was moved to {moved}")
        self.progress.print(f"resumed {self.run_dir} from checkpoint {step} ({self.env_steps} env steps, "
                            f"{program.updates(self.state)} updates)")

    # --- the loops ---------------------------------------------------------------------------

    def execute(self, pause_at: int | None = None) -> str:
        """Collect, then the offline updates; returns the run directory. `pause_at` (a multiple of
        `log_interval` below `total_env_steps`): stop collecting there and checkpoint, so that resuming
        continues exactly as if the run had not stopped (the schedules follow `total_env_steps`)."""
        self.pause_at = pause_at if pause_at is not None and pause_at < self.cfg.total_env_steps else None
        try:
            self.collect()
            if self.pause_at is not None:
                self.progress.print(f"paused at {self.env_steps} env steps (checkpoint {self.last_saved}); "
                                    f"the run's budget is {self.cfg.total_env_steps}")
                return self.run_dir
            self.offline()
        except Diverged as e:
            last = os.path.join(ckpt.checkpoint_dir(self.run_dir), str(self.last_saved))
            where = (f"the last good checkpoint is {last}" if self.last_saved is not None
                     else "no checkpoint was written before it")
            raise Diverged(f"{e} The run stops; {where} (nothing after it was saved).") from None
        except Exception as e:
            if not distributed.is_peer_failure(e):
                raise
            raise distributed.peer_failure(e, self.env_steps, self.run_dir, self.last_saved) from e
        except KeyboardInterrupt:
            saved = (f"its newest checkpoint is {self.last_saved}; continue it with `python -m ezv.train --resume "
                     f"{self.run_dir}`" if self.last_saved is not None else "no checkpoint was written yet")
            self.progress.print(f"interrupted at {self.env_steps} env steps: {self.run_dir} keeps what was logged; "
                                f"{saved}")
            raise
        finally:
            self.close()
        if self.writer:
            print(f"done in {time.perf_counter() - self.started:.0f}s; final eval return {self.last_eval}; metrics "
                  f"in {self.run_dir}/metrics.jsonl")
        return self.run_dir

    def collect(self) -> None:
        """Chunks of acting and learning until `total_env_steps`; a row per seed per chunk."""
        cfg, program = self.cfg, self.program
        target = cfg.total_env_steps if self.pause_at is None else self.pause_at
        if self.env_steps < target:
            compile_start = time.perf_counter()
            program.compile(self.state)
            self.progress.print(f"compiled the training chunk in {time.perf_counter() - compile_start:.1f}s")
        self.previous_time = time.perf_counter()
        updates = program.updates(self.state)
        every = cfg.checkpoint_every
        while self.env_steps < target:
            updates_before = updates
            self.state, metrics = program.chunk(self.state)
            per_seed = program.seed_metrics(metrics)
            self.env_steps = program.env_steps(self.state)
            check_finite(per_seed, self.seeds, updates_before,
                         f"while collecting env steps up to {self.env_steps}", learning_mask=True)
            updates = program.updates(self.state)
            now = time.perf_counter()
            rates = {"env_steps_per_s": cfg.log_interval / (now - self.previous_time),
                     "updates_per_s": (updates - updates_before) / (now - self.previous_time)}
            rows = [{"seed": s, "env_steps": self.env_steps, "updates": updates, **summarize_chunk(m), **rates}
                    for s, m in zip(self.seeds, per_seed)]
            done = self.env_steps >= cfg.total_env_steps
            paused = not done and self.env_steps >= target
            self.log_chunk(rows, self.env_steps % cfg.eval_interval == 0 or done, rates["env_steps_per_s"],
                           rates["updates_per_s"],
                           self.env_steps if (every and self.env_steps % every == 0) or done or paused else None,
                           final=done and self.offline_done >= cfg.offline_updates)
            self.previous_time = time.perf_counter()

    def offline(self) -> None:
        """The offline updates after collection, in blocks that end on checkpoint boundaries (so a
        resumed offline phase repeats the same blocks)."""
        cfg, program = self.cfg, self.program
        if self.offline_done < cfg.offline_updates:
            self.progress.print(f"collection done; {cfg.offline_updates - self.offline_done} offline updates")
        every = cfg.checkpoint_every
        block = min(1_000, every or 1_000)
        updates = program.updates(self.state)
        while self.offline_done < cfg.offline_updates:
            count = min(block - self.offline_done % block, cfg.offline_updates - self.offline_done)
            self.state, metrics = program.offline(self.state, count)
            per_seed = program.seed_metrics(metrics)
            check_finite(per_seed, self.seeds, updates, "in the offline phase", learning_mask=False)
            self.offline_done += count
            updates += count
            rate = count / max(time.perf_counter() - self.previous_time, 1e-9)
            rows = [{"seed": s, "env_steps": self.env_steps, "updates": updates, "offline": True,
                     "offline_updates": self.offline_done, **{k: float(np.mean(v)) for k, v in m.items()}}
                    for s, m in zip(self.seeds, per_seed)]
            done = self.offline_done == cfg.offline_updates
            save_at = self.env_steps + self.offline_done if (every and self.offline_done % every == 0) or done else None
            self.log_chunk(rows, done, 0.0, rate, save_at, final=done)
            self.previous_time = time.perf_counter()

    # --- what a chunk leaves behind ------------------------------------------------------------

    def wall(self) -> float:
        """Seconds of training so far, across resumes."""
        return round(self.wall0 + time.perf_counter() - self.started, 3)

    def log_chunk(self, rows: list[dict], evaluate_now: bool, env_rate: float, update_rate: float,
                  save_at: int | None, final: bool = False) -> None:
        if evaluate_now:
            self.evaluate_into(rows, final)
        for row in rows:
            row["wall_s"] = self.wall()
        self.log.write(rows)
        self.progress.update(rows, env_rate, update_rate, self.last_eval)
        if save_at is not None:
            self.save(save_at)

    def evaluate_into(self, rows: list[dict], final: bool = False) -> None:
        """One evaluation per seed, added to that seed's row; periodic ones stop episodes at
        `eval_max_episode_steps`, the run's final one plays them to the env's cap. Every process of a
        multi-process run evaluates the same networks on the same episodes (the others would only wait for
        process 0 at the next checkpoint's barrier); process 0 writes the rows and keeps the best."""
        max_steps = None if final else self.cfg.eval_max_episode_steps
        for i, (row, result) in enumerate(zip(rows, self.program.evaluate_seeds(self.state, self.env_steps,
                                                                                 max_steps))):
            row.update(eval_row(result))
            if self.best is not None:
                self.best.offer(row["seed"], row, logger.row_progress(row), lambda i=i: self._seed_model(i))
        for delay in self.program.delay_eval_envs:
            for row, result in zip(rows, self.program.evaluate_seeds(self.state, self.env_steps, max_steps, delay)):
                row.update(eval_row(result, prefix=f"eval_delay{delay}_"))
        self.last_eval = mean_present([r.get("eval_return_mean") for r in rows])

    def _seed_model(self, seed_index: int) -> dict[str, Any]:
        params, batch_stats = self.program.seed_variables(self.state, seed_index)
        return jax.device_get({"params": params, "batch_stats": batch_stats})

    def save(self, progress_step: int) -> None:
        program = self.program
        meta = {"env_steps": self.env_steps, "updates": program.updates(self.state),
                "offline_updates_done": self.offline_done, "wall_s": self.wall(),
                "config": to_plain(self.cfg), "backend": self.spec.backend, "ezv": __version__,
                "processes": distributed.process_count()}
        self.checkpointer.save(progress_step, self.state, program.model_variables(self.state), meta)
        self.last_saved = progress_step

    def close(self) -> None:
        self.progress.close()
        self.log.close()
        self.checkpointer.close()
