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

from benchmarks.common import machine, print_table, save_json, time_compiled
from benchmarks.flops import loop_flops
from ezv.agent import CompiledAgent
from ezv.program import Program
from ezv.train import resolve_config


def bench_config(env_id: str, iterations: int, extra_flags: list[str]):
    """The preset's config, with chunks of `iterations` that learn from the second chunk on."""
    cfg = resolve_config(["--env-id", env_id, *extra_flags])
    steps_per_chunk = iterations * cfg.num_envs
    # Learn from the first chunk on: the benchmark needs only a few windows in the replay.
    window_rows = cfg.learner.unroll_steps + cfg.learner.td_steps + 1
    return dataclasses.replace(
        cfg,
        log_interval=steps_per_chunk,
        eval_interval=steps_per_chunk,
        total_env_steps=100 * steps_per_chunk,
        learning_starts=2 * window_rows * cfg.num_envs,
    )


def build(env_id: str, iterations: int, extra_flags: list[str]) -> Program:
    """The program `ezv.train` compiles for this config (one seed), so the loop timed is the one that trains."""
    return Program(bench_config(env_id, iterations, extra_flags))


def measure(
    env_id: str, iterations: int, chunks: int, extra_flags: list[str], with_flops: bool = True,
    profile_dir: str | None = None,
) -> dict:
    program = build(env_id, iterations, extra_flags)
    agent, cfg = program.agent, program.cfg
    start = time.perf_counter()
    state = program.init()
    program.compile(state)
    compile_s = time.perf_counter() - start
    # Fill the replay past `learning_starts` (and run one chunk beyond), then time the chunks after it.
    state, _ = program.chunk(state)
    while program.env_steps(state) < cfg.learning_starts:
        state, _ = program.chunk(state)
    jax.block_until_ready(state.params)
    updates0 = int(state.updates)
    start = time.perf_counter()
    for _ in range(chunks):
        state, _ = program.chunk(state)
    jax.block_until_ready(state.params)
    loop_s = time.perf_counter() - start
    env_steps = chunks * iterations * cfg.num_envs
    updates = int(state.updates) - updates0
    L = cfg.learner
    roots_per_update = L.batch_size * (L.unroll_steps + 1)
    stages = stage_times(agent, state, profile_dir)
    per_iteration = {
        name: ms * (1 if name.startswith("act") else cfg.updates_per_iteration / cfg.learn_every)
        for name, ms in stages.items()
    }
    total = sum(per_iteration.values())
    row = dict(
        env_id=env_id,
        preset=cfg.preset,
        device=machine()["device"],
        num_envs=cfg.num_envs,
        batch_size=L.batch_size,
        simulations=agent.model.num_simulations,
        updates_per_env_step=cfg.replay_ratio,
        compile_s=compile_s,
        env_steps_per_s=env_steps / loop_s,
        updates_per_s=updates / loop_s,
        reanalysed_roots_per_s=updates * roots_per_update / loop_s,
        stage_ms=stages,
        stage_share={k: v / total for k, v in per_iteration.items()},
        # The learner alone (sample + reanalysis search + targets + gradient step, per update).
        learner_updates_per_s=1e3 / sum(v for k, v in stages.items() if not k.startswith("act")),
        **memory_gib(state),
    )
    if with_flops:
        flops = loop_flops(agent, state)
        row["flops"] = flops
        row["achieved_tflops"] = (flops["update"] * row["updates_per_s"]
                                  + flops["act_per_iteration"] * row["env_steps_per_s"] / cfg.num_envs) / 1e12
    return row


def memory_gib(state) -> dict[str, float]:
    """The train state's size (replay, networks, optimiser) and, where the device reports it (GPUs),
    the peak of device memory in use so far in this process (with several loops in one process, the
    largest of them so far, not this loop's own)."""
    out = {"state_gib": sum(x.nbytes for x in jax.tree.leaves(state)) / 2**30}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
    return out


def sample_group(agent: CompiledAgent, replay, key):
    """The `updates_per_iteration` batches of a learning iteration, sampled as `Learner.learn_group`
    samples them: (indices, importance weights, windows [count, B, ...], windows flattened [count*B, ...])."""
    count = agent.cfg.updates_per_iteration
    idx, weights, w = jax.vmap(agent.learner.sample_batch, in_axes=(None, 0))(replay, jax.random.split(key, count))
    return idx, weights, w, jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), w)


def stage_times(agent: CompiledAgent, state, profile_dir: str | None = None) -> dict[str, float]:
    """Milliseconds of each stage of an iteration, per call (acting) or per update (the rest), each
    its own jitted function on `state` (no donation). The learner stages run as the loop runs them:
    the `updates_per_iteration` batches of an iteration are sampled, reanalysed (target-network
    encoding of every window position + one search over all their batch x (K+1) roots) and turned
    into targets together, then each takes its gradient step; a group's time is divided by its size."""
    count = agent.cfg.updates_per_iteration
    key = jax.random.PRNGKey(1)
    act = jax.jit(agent.act)

    sample = jax.jit(lambda replay, key: sample_group(agent, replay, key))
    idx, weights, window, flat = sample(state.replay, key)
    search = jax.jit(agent.learner.reanalysis_search)
    values, out = search(state, flat, key)
    build_targets = jax.jit(agent.learner.build_targets)
    targets, _ = build_targets(state, flat, values, out)
    first = lambda tree: jax.tree.map(lambda x: x[: agent.learner.batch_size], tree)  # noqa: E731
    one_window = first(flat)
    one_targets = first(targets)
    gradient = jax.jit(agent.learner.gradient_step)
    seconds = {
        "act (per iteration)": time_compiled(act, state)[1],
        "sample windows": time_compiled(sample, state.replay, key)[1] / count,
        "reanalysis search": time_compiled(search, state, flat, key)[1] / count,
        "targets": time_compiled(build_targets, state, flat, values, out)[1] / count,
        "gradient step": time_compiled(gradient, state, one_window, one_targets, weights[0], key)[1],
    }
    if profile_dir:
        # One call of each stage under the profiler (XProf/TensorBoard trace), compiled already.
        with jax.profiler.trace(profile_dir):
            jax.block_until_ready(act(state))
            jax.block_until_ready(search(state, flat, key))
            jax.block_until_ready(gradient(state, one_window, one_targets, weights[0], key))
    return {k: 1e3 * v for k, v in seconds.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks loop", description=__doc__)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per timed chunk")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args(argv)
    preset = resolve_config(["--env-id", args.env_id, *extra]).preset
    iterations = args.iterations or default_iterations(preset)
    chunks = 1 if args.quick else args.chunks
    row = measure(args.env_id, iterations, chunks, extra)
    print_table(
        f"Full loop, {row['env_id']} ({row['preset']} preset) on {row['device']}",
        [row],
        ["env_id", "num_envs", "batch_size", "simulations", "compile_s", "env_steps_per_s", "updates_per_s",
         "reanalysed_roots_per_s", "learner_updates_per_s", "state_gib", "device_peak_gib"],
    )
    print_table(
        "Where an iteration's time goes (stages timed separately)",
        [dict(stage=k, ms_per_call=row["stage_ms"][k], share_of_iteration=row["stage_share"][k])
         for k in row["stage_ms"]],
        ["stage", "ms_per_call", "share_of_iteration"],
    )
    print_flops(row)
    save_json(args.json, "loop", [row])
    return row


def default_iterations(preset: str) -> int:
    """Iterations per timed chunk: the reference-sized presets are slow on a CPU (a few only)."""
    big = preset in ("atari", "dmc_state", "dmc_image")
    if jax.default_backend() == "cpu":
        return 4 if big else 125
    return 50 if big else 250


def projected_hours(row: dict, total_env_steps: int = 100_000, offline_updates: int = 20_000) -> float:
    """Wall-clock of a 100k run at the measured rates: collection (acting + learning at the
    preset's replay ratio) plus the reference's offline updates; evaluation not counted."""
    return (total_env_steps / row["env_steps_per_s"] + offline_updates / row["updates_per_s"]) / 3600


def print_flops(row: dict, peak_tflops: float | None = None) -> None:
    if "flops" not in row:
        return
    f = row["flops"]
    g = {k: v / 1e9 for k, v in f.items()}
    line = (f"model FLOPs per update {g['update']:,.1f} G (reanalysis encode {g['reanalysis_encode_per_update']:,.1f}"
            f" + search {g['reanalysis_search_per_update']:,.1f} + gradient {g['gradient_per_update']:,.1f});"
            f" acting {g['act_per_iteration']:,.2f} G per iteration; achieved {row['achieved_tflops']:.3g} TFLOP/s")
    if peak_tflops:
        line += f" = {100 * row['achieved_tflops'] / peak_tflops:.2g}% of the measured matmul peak ({peak_tflops:.3g})"
    print(line)


if __name__ == "__main__":
    main()
