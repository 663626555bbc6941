"""Full-loop throughput of a preset, and where the time goes.

    python -m benchmarks loop --env-id CartPole-v1 [--chunks 3] [--iterations 125] [--json out.json]
    python -m benchmarks loop --env-id Breakout-v5 --iterations 4 --chunks 1
    python -m benchmarks loop --env-id dmc/CartpoleBalance --preset control

Measures the compiled training chunk (acting + learning, steady state, compile time apart),
then times each stage of an iteration as its own jitted function on the same state: acting
(search over num_envs roots + env step + replay write), sampling windows, reanalysis
(target-network encoding + one search over batch x (K+1) roots) and the gradient step.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax

import ezv.envs as envs
from benchmarks.common import print_table, save_json, time_compiled
from ezv.agent import Agent
from ezv.train import resolve_config


def build(env_id: str, iterations: int, extra_flags: list[str]) -> Agent:
    cfg = resolve_config(["--env-id", env_id, *extra_flags])
    steps_per_chunk = iterations * cfg.num_envs
    # Learn from the first chunk on: the benchmark needs only a few windows in the replay.
    window_rows = cfg.learner.unroll_steps + cfg.learner.td_steps + 1
    cfg = dataclasses.replace(
        cfg,
        log_interval=steps_per_chunk,
        eval_interval=steps_per_chunk,
        total_env_steps=100 * steps_per_chunk,
        learning_starts=2 * window_rows * cfg.num_envs,
    )
    env = envs.make(env_id, cfg.num_envs, cfg.seed, **cfg.env_options)
    return Agent(cfg, env)


def measure(env_id: str, iterations: int, chunks: int, extra_flags: list[str]) -> dict:
    agent = build(env_id, iterations, extra_flags)
    cfg = agent.cfg
    start = time.perf_counter()
    state = agent.init(jax.random.PRNGKey(0))
    compiled = agent.train_chunk.lower(state).compile()
    compile_s = time.perf_counter() - start
    # Fill the replay past `learning_starts` (and run one chunk beyond), then time the chunks after it.
    state, _ = compiled(state)
    while int(state.iteration) * cfg.num_envs < cfg.learning_starts:
        state, _ = compiled(state)
    jax.block_until_ready(state.params)
    updates0 = int(state.updates)
    start = time.perf_counter()
    for _ in range(chunks):
        state, _ = compiled(state)
    jax.block_until_ready(state.params)
    loop_s = time.perf_counter() - start
    env_steps = chunks * iterations * cfg.num_envs
    updates = int(state.updates) - updates0
    L = cfg.learner
    roots_per_update = L.batch_size * (L.unroll_steps + 1)

    # Stage timings on the same state (each its own jitted function; no donation).
    key = jax.random.PRNGKey(1)
    act = jax.jit(agent.act)
    sample = jax.jit(agent.sample_batch)
    idx, weights, window = sample(state.replay, key)
    reanalyse = jax.jit(agent.reanalyse)
    targets, _ = reanalyse(state, window, key)
    gradient = jax.jit(agent.gradient_step)
    stages = {
        "act (per iteration)": time_compiled(act, state)[1],
        "sample windows": time_compiled(sample, state.replay, key)[1],
        "reanalyse": time_compiled(reanalyse, state, window, key)[1],
        "gradient step": time_compiled(gradient, state, window, targets, weights, key)[1],
    }
    per_iteration = {
        "act (per iteration)": stages["act (per iteration)"],
        "sample windows": stages["sample windows"] * cfg.updates_per_iteration / cfg.learn_every,
        "reanalyse": stages["reanalyse"] * cfg.updates_per_iteration / cfg.learn_every,
        "gradient step": stages["gradient step"] * cfg.updates_per_iteration / cfg.learn_every,
    }
    total = sum(per_iteration.values())
    return dict(
        env_id=env_id,
        preset=cfg.preset,
        device=str(jax.devices()[0].device_kind if hasattr(jax.devices()[0], "device_kind") else jax.devices()[0]),
        num_envs=cfg.num_envs,
        batch_size=L.batch_size,
        simulations=agent.num_simulations,
        updates_per_env_step=cfg.replay_ratio,
        compile_s=compile_s,
        env_steps_per_s=env_steps / loop_s,
        updates_per_s=updates / loop_s,
        reanalysed_roots_per_s=updates * roots_per_update / loop_s,
        stage_ms={k: 1e3 * v for k, v in stages.items()},
        stage_share={k: v / total for k, v in per_iteration.items()},
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks loop", description=__doc__)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per timed chunk")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args(argv)
    preset = resolve_config(["--env-id", args.env_id, *extra]).preset
    # The reference-sized presets are slow on a CPU: time a few iterations only.
    iterations = args.iterations or (4 if preset in ("atari", "dmc_state") else 125)
    chunks = 1 if args.quick else args.chunks
    row = measure(args.env_id, iterations, chunks, extra)
    print_table(
        f"Full loop, {row['env_id']} ({row['preset']} preset) on {row['device']}",
        [row],
        ["env_id", "num_envs", "batch_size", "simulations", "compile_s", "env_steps_per_s", "updates_per_s",
         "reanalysed_roots_per_s"],
    )
    print_table(
        "Where an iteration's time goes (stages timed separately)",
        [dict(stage=k, ms_per_call=row["stage_ms"][k], share_of_iteration=row["stage_share"][k]) for k in row["stage_ms"]],
        ["stage", "ms_per_call", "share_of_iteration"],
    )
    save_json(args.json, "loop", [row])
    return row


if __name__ == "__main__":
    main()
