"""`python -m ezv.train --env-id Breakout-v5 [--seed 0] [--total-env-steps 100000] [--run-dir DIR] ...`

The preset comes from the env's domain (or `--preset`); every config field is a flag on top of
it (`--help` lists them with the preset's values for the given `--env-id`). The run directory
gets `config.yaml` and `metrics.jsonl`: one line per `--log-interval` env steps with env_steps,
updates, wall_s, train_return_mean (episodes finished since the previous line) and the losses;
evaluation lines add eval_return_mean, eval_return_std and eval_episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np

from ezv import __version__
from ezv.config import PRESETS, Config, ConfigError, preset_name_for, validate


def resolve_config(argv: Sequence[str]) -> Config:
    """Parse flags on top of the preset for the env (two passes: env id and preset first)."""
    import tyro

    import ezv.envs as envs

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env-id", "--env_id", default=Config.env_id)
    pre.add_argument("--preset", default="auto")
    known, _ = pre.parse_known_args(argv)
    if known.preset == "auto":
        preset = preset_name_for(envs.domain_of(known.env_id), envs.has_continuous_actions(known.env_id))
    elif known.preset in PRESETS:
        preset = known.preset
    else:
        raise ConfigError(f"unknown --preset {known.preset!r}; choose one of: auto, {', '.join(PRESETS)}.")
    default = dataclasses.replace(PRESETS[preset](), env_id=known.env_id)
    cfg = tyro.cli(Config, default=default, args=list(argv), description=__doc__)
    return dataclasses.replace(cfg, preset=preset)


def _eval_row(result: dict[str, Any]) -> dict[str, float]:
    returns = np.asarray(result["returns"])[np.asarray(result["finished"])]
    if returns.size == 0:
        return {"eval_episodes": 0}
    return {
        "eval_return_mean": float(returns.mean()),
        "eval_return_std": float(returns.std()),
        "eval_episodes": int(returns.size),
        "eval_length_mean": float(np.asarray(result["lengths"])[np.asarray(result["finished"])].mean()),
    }


def train(cfg: Config) -> str:
    """Run training to the end; returns the run directory."""
    import ezv.envs as envs
    from ezv import logger
    from ezv.agent import Agent, summarize_chunk

    env = envs.make(cfg.env_id, cfg.num_envs, cfg.seed, **cfg.env_options)
    validate(cfg, env.spec.action_space.n if env.spec.discrete else None, continuous=not env.spec.discrete)
    eval_env = envs.make(cfg.env_id, cfg.eval_episodes, cfg.seed + 10_000, evaluation=True, **cfg.env_options)
    run_dir = logger.create_run_dir(cfg.run_dir or logger.default_run_dir(cfg.env_id, cfg.seed))
    cfg = dataclasses.replace(cfg, run_dir=run_dir)
    agent = Agent(cfg, env, eval_env)
    logger.write_config(
        run_dir,
        cfg,
        {
            "env_spec": dataclasses.asdict(env.spec),
            "derived": {
                "num_simulations": agent.num_simulations,
                "max_considered_actions": agent.considered,
                "updates_per_iteration": cfg.updates_per_iteration,
                "learn_every_iterations": cfg.learn_every,
                "total_updates": cfg.total_updates,
            },
            "versions": {"ezv": __version__, "jax": jax.__version__},
            "device": str(jax.devices()[0]),
        },
    )
    log = logger.MetricsLog(run_dir)
    progress = logger.Progress(cfg.total_env_steps, cfg.quiet)
    progress.print(f"ezv {cfg.env_id} ({cfg.preset} preset), run dir {run_dir}")

    key = jax.random.PRNGKey(cfg.seed)
    init_key, eval_key = jax.random.split(key)
    start = time.perf_counter()
    state = agent.init(init_key)
    compiled = agent.train_chunk.lower(state).compile()
    progress.print(f"compiled the training chunk in {time.perf_counter() - start:.1f}s")

    last_eval = None

    def evaluate(env_steps: int) -> dict[str, float]:
        nonlocal last_eval
        result = agent.evaluate(state.params, state.batch_stats, jax.random.fold_in(eval_key, env_steps))
        row = _eval_row(jax.device_get(result))
        last_eval = row.get("eval_return_mean")
        return row

    run_start = time.perf_counter()
    previous_updates, previous_time = 0, run_start
    try:
        for chunk in range(cfg.num_chunks):
            state, metrics = compiled(state)
            summary = summarize_chunk(jax.device_get(metrics))
            env_steps = int(state.iteration) * cfg.num_envs
            updates = int(state.updates)
            now = time.perf_counter()
            row = {"env_steps": env_steps, "updates": updates, "wall_s": round(now - start, 3), **summary}
            steps_per_s = cfg.log_interval / (now - previous_time)
            updates_per_s = (updates - previous_updates) / (now - previous_time)
            row["env_steps_per_s"], row["updates_per_s"] = steps_per_s, updates_per_s
            if env_steps % cfg.eval_interval == 0 or chunk == cfg.num_chunks - 1:
                row.update(evaluate(env_steps))
                row["wall_s"] = round(time.perf_counter() - start, 3)
            log.write(row)
            progress.update(row, steps_per_s, updates_per_s, last_eval)
            previous_updates, previous_time = updates, time.perf_counter()

        if cfg.offline_updates:
            progress.print(f"collection done; {cfg.offline_updates} offline updates")
            block = min(cfg.offline_updates, 1_000)
            done = 0
            while done < cfg.offline_updates:
                count = min(block, cfg.offline_updates - done)
                state, metrics = agent.offline_chunk(state, count)
                done += count
                losses = {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}
                row = {"env_steps": int(state.iteration) * cfg.num_envs, "updates": int(state.updates),
                       "wall_s": round(time.perf_counter() - start, 3), "offline": True, **losses}
                if done == cfg.offline_updates:
                    row.update(evaluate(row["env_steps"]))
                log.write(row)
                progress.update(row, 0.0, count / max(time.perf_counter() - previous_time, 1e-9), last_eval)
                previous_time = time.perf_counter()
    finally:
        progress.close()
        log.close()
    print(f"done in {time.perf_counter() - run_start:.0f}s; final eval return {last_eval}; metrics in {run_dir}/metrics.jsonl")
    return run_dir


def main(argv: Sequence[str] | None = None) -> None:
    import ezv.envs as envs

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = resolve_config(argv)
        train(cfg)
    except (ConfigError, envs.UnknownEnvError, envs.EnvOptionError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
