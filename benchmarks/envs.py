"""Env steps per second per backend, stepped with random actions inside one jitted `lax.scan`.

    python -m benchmarks envs [--quick] [--json benchmarks/out/envs.json]
"""

from __future__ import annotations

import argparse

import jax

import ezv.envs as envs
from benchmarks.common import print_table, save_json, time_compiled

# One representative id per backend (and options that keep it on the CPU defaults).
BACKEND_IDS = [
    ("gymnax", "CartPole-v1", {}),
    ("gymnax", "Breakout-MinAtar", {}),
    ("envpool-atari", "Breakout-v5", {}),
    ("envpool-dmc", "CheetahRun-v1", {}),
    ("playground", "dmc/CartpoleBalance", {}),
    ("playground", "dmc/CheetahRun", {}),
    ("brax", "brax/halfcheetah", dict(backend="spring")),
    # Rendered on the host after every control step (two per agent step at action repeat 2).
    ("envpool-dmc-pixels", "pixels/CheetahRun-v1", {}),
    ("envpool-dmc-pixels", "pixels/CartpoleBalance-v1", dict(render_size=64)),
]


def steps_per_second(env_id: str, options: dict, num_envs: int, scan_steps: int) -> dict:
    env = envs.make(env_id, num_envs=num_envs, seed=0, **options)

    def run(state, key):
        def body(state, k):
            state, ts = env.step(state, env.random_actions(k))
            return state, ts.reward.sum()

        return jax.lax.scan(body, state, jax.random.split(key, scan_steps))

    state, _ = env.reset(jax.random.PRNGKey(0))
    # envpool's state is a handle to C++ envs: re-running with the same handle is fine.
    fn = jax.jit(run)
    compile_s, run_s = time_compiled(fn, state, jax.random.PRNGKey(1))
    return dict(
        env_id=env_id,
        num_envs=num_envs,
        agent_steps_per_s=num_envs * scan_steps / run_s,
        compile_s=compile_s,
        action_repeat=env.spec.options.get("action_repeat", env.spec.options.get("frame_skip", 1)),
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks envs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one batch size, short scans")
    parser.add_argument("--num-envs", type=int, nargs="*", default=None)
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    sizes = args.num_envs or ([8] if args.quick else [1, 8, 64])
    scan_steps = 100 if args.quick else 500
    rows = []
    # Quick: one id per backend (Playground's CheetahRun alone compiles for ~40 s on a CPU).
    ids = ([b for b in BACKEND_IDS if b[1] not in ("dmc/CheetahRun", "Breakout-MinAtar", "pixels/CartpoleBalance-v1")]
           if args.quick else BACKEND_IDS)
    for backend, env_id, options in ids:
        for n in sizes:
            row = dict(backend=backend, **steps_per_second(env_id, options, n, scan_steps))
            print(f"  {backend:18s} {env_id:26s} N={n:<4d} {row['agent_steps_per_s']:>12,.0f} steps/s", flush=True)
            rows.append(row)
    print_table(
        "Env steps/s inside a jitted scan (agent steps; action repeat not multiplied in)",
        rows,
        ["backend", "env_id", "num_envs", "agent_steps_per_s", "compile_s", "action_repeat"],
    )
    save_json(args.json, "envs", rows)
    return rows


if __name__ == "__main__":
    main()
