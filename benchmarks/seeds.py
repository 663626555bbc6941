"""Seed sweeps: wall-clock of N = 1, 4, 8 seeds trained in one program by `jax.vmap`.

    python -m benchmarks seeds [--env-id CartPole-v1] [--seeds 1 4 8] [--iterations 125] [--quick] [--json out.json]

Each N is its own compiled program, the one `ezv.train --num-seeds N` runs (`ezv.program.Program`:
the training chunk vmapped over N independent states; for envpool one pool split by seed; N = 1 is
a plain single-seed program). Its replay is filled past `learning_starts`, then chunks are
timed in steady state. The marginal cost of a seed is what N seeds cost over one, per seed;
on a CPU it is close to the cost of a whole run (the cores are already busy), on a GPU far
less (small batches leave the device idle).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax

from benchmarks.common import print_table, save_json
from benchmarks.loop import bench_config
from ezv.program import Program


def measure(cfg, num_seeds: int, chunks: int) -> dict:
    program = Program(dataclasses.replace(cfg, num_seeds=num_seeds))
    start = time.perf_counter()
    state = program.init()
    program.compile(state)
    compile_s = time.perf_counter() - start

    def run(state):
        return program.chunk(state)[0]

    state = run(state)
    while program.env_steps(state) < cfg.learning_starts:
        state = run(state)
    state = jax.block_until_ready(run(state))
    updates0 = program.updates(state)
    start = time.perf_counter()
    for _ in range(chunks):
        state = run(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    env_steps = chunks * cfg.iterations_per_chunk * cfg.num_envs
    return dict(
        env_id=cfg.env_id,
        seeds=num_seeds,
        compile_s=compile_s,
        s_per_chunk=seconds / chunks,
        env_steps_per_s_per_seed=env_steps / seconds,
        env_steps_per_s_total=num_seeds * env_steps / seconds,
        updates_per_s_per_seed=(program.updates(state) - updates0) / seconds,
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks seeds", description=__doc__)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--iterations", type=int, default=None, help="iterations per timed chunk")
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args(argv)
    iterations = args.iterations or (25 if args.quick else 125)
    cfg = bench_config(args.env_id, iterations, extra)
    rows = []
    for n in args.seeds:
        row = measure(cfg, n, 1 if args.quick else args.chunks)
        print(f"  {n} seeds: {row['s_per_chunk']:.2f} s per chunk, {row['env_steps_per_s_total']:,.0f} env steps/s "
              "in all", flush=True)
        rows.append(row)
    base = rows[0]["s_per_chunk"] / rows[0]["seeds"]
    for row in rows:
        # Time per chunk relative to N independent runs of one seed each, run one after another.
        row["cost_vs_sequential"] = row["s_per_chunk"] / (base * row["seeds"])
    print_table(
        f"Seed sweeps by vmap, {args.env_id} ({cfg.preset} preset) on {jax.devices()[0].device_kind}",
        rows,
        ["seeds", "compile_s", "s_per_chunk", "env_steps_per_s_total", "env_steps_per_s_per_seed",
         "updates_per_s_per_seed", "cost_vs_sequential"],
    )
    save_json(args.json, "seeds", rows)
    return rows


if __name__ == "__main__":
    main()
