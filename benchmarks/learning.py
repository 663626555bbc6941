"""Learning curves: evaluation return vs env steps and wall-clock, over seeds.

    python -m benchmarks learning --env-id CartPole-v1 --seeds 0 1 2 [--threshold 475] [--together] [train flags]
    python -m benchmarks learning --from-runs RUN_DIR [RUN_DIR ...]   # tabulate finished (or resumed) runs

Runs `ezv.train` once per seed (sequentially, runs under benchmarks/out/runs/), or with `--together`
once with `--num-seeds` (consecutive seeds vmapped in one program), then prints the mean and std of
the evaluation return at every evaluation point, the mean wall-clock to reach it, and the first env
step at which the seed-mean crosses `--threshold`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import print_table, save_json
from ezv import scores
from ezv.logger import eval_rows, file_safe
from ezv.plot import read_run
from ezv.train import resolve_config, train


def final_evals(run_dirs: list[str]) -> list[dict]:
    """The last evaluation row of every seed of these runs (after the offline phase, if any)."""
    return [rows[-1] for run_dir in run_dirs for rows in eval_rows(run_dir).values() if rows]


def read_evals(run_dir: str) -> dict[int, list[dict]]:
    """Evaluation rows of a run's collection phase, per seed."""
    return {seed: [r for r in rows if not r.get("offline")] for seed, rows in eval_rows(run_dir).items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks learning", description=__doc__)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--out", default="benchmarks/out/runs")
    parser.add_argument("--json", default=None)
    parser.add_argument("--together", action="store_true", help="one run with --num-seeds (seeds must be consecutive)")
    parser.add_argument("--from-runs", nargs="+", default=None, metavar="RUN_DIR",
                        help="train nothing; tabulate the evaluations these run directories logged")
    args, extra = parser.parse_known_args(argv)
    if args.from_runs:
        curves = [c for run_dir in args.from_runs for c in read_evals(run_dir).values()]
        env_id = read_run(args.from_runs[0])[0]
        return summarise(curves, f"{env_id} ({len(curves)} seed(s))", args.threshold, args.json, env_id,
                         final_evals(args.from_runs))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    curves, run_dirs = [], []
    if args.together:
        if args.seeds != list(range(args.seeds[0], args.seeds[0] + len(args.seeds))):
            parser.error("--together needs consecutive seeds")
        run_dir = os.path.join(args.out, f"{file_safe(args.env_id)}-s{args.seeds[0]}x{len(args.seeds)}-{stamp}")
        train(resolve_config(["--env-id", args.env_id, "--seed", str(args.seeds[0]), "--num-seeds",
                              str(len(args.seeds)), "--run-dir", run_dir, "--quiet", *extra]))
        curves, run_dirs = list(read_evals(run_dir).values()), [run_dir]
    for seed in [] if args.together else args.seeds:
        run_dir = os.path.join(args.out, f"{file_safe(args.env_id)}-s{seed}-{stamp}")
        cfg = resolve_config(["--env-id", args.env_id, "--seed", str(seed), "--run-dir", run_dir, "--quiet", *extra])
        train(cfg)
        curves.extend(read_evals(run_dir).values())
        run_dirs.append(run_dir)
    return summarise(curves, f"{args.env_id} seeds {args.seeds}", args.threshold, args.json, args.env_id,
                     final_evals(run_dirs))


def summarise(curves: list[list[dict]], title: str, threshold: float | None, json_path: str | None,
              env_id: str | None = None, final: list[dict] = ()) -> list[dict]:
    steps = sorted({r["env_steps"] for c in curves for r in c})
    rows = []
    for s in steps:
        at = [next((r for r in c if r["env_steps"] == s), None) for c in curves]
        returns = np.array([r["eval_return_mean"] for r in at if r is not None])
        walls = np.array([r["wall_s"] for r in at if r is not None])
        rows.append(dict(env_steps=s, eval_return_mean=float(returns.mean()), eval_return_std=float(returns.std()),
                         seeds=len(returns), wall_s_mean=float(walls.mean()),
                         per_seed=[round(float(x), 1) for x in returns]))
    print_table(f"{title}: evaluation return over seeds", rows,
                ["env_steps", "eval_return_mean", "eval_return_std", "seeds", "wall_s_mean", "per_seed"])
    if threshold is not None:
        hit = next((r for r in rows if r["eval_return_mean"] >= threshold), None)
        print(f"seed-mean eval return >= {threshold}: "
              + (f"at {hit['env_steps']} env steps ({hit['wall_s_mean']:.0f}s)" if hit else "not reached"))
    if env_id is not None:
        print_published_comparison(env_id, rows, list(final))
    save_json(json_path, "learning", rows)
    return rows


def print_published_comparison(env_id: str, rows: list[dict], final: list[dict] = ()) -> None:
    """ezv beside the published TD-MPC2 / DreamerV3 / SAC curves at every published point ezv reached
    (DMC), or beside EZ-V2's Atari 100k score (its final 27k-step evaluation after 100k env steps)."""
    game = scores.atari_game(env_id)
    if game is not None and final:
        ref = scores.atari_table()[game]
        returns = np.array([r["eval_return_mean"] for r in final])
        steps, offline = min(r["env_steps"] for r in final), max(r.get("offline_updates", 0) for r in final)
        capped = any(r.get("eval_capped") for r in final)
        which = "last evaluation (a periodic one, its episodes capped)" if capped else "last evaluation"
        print(f"{game}: ezv's {which} {returns.mean():.1f} ± {returns.std():.1f} ({len(returns)} seeds, "
              f"human-normalised {scores.human_normalized(game, float(returns.mean())):.3f}) after {steps:,} env "
              f"steps and {offline:,} offline updates; EZ-V2 at 100k: {ref['efficientzero_v2']} "
              f"(random {ref['random']}, human {ref['human']})"
              + ("" if steps >= 100_000 else " — not comparable before 100k env steps"))
        return
    published = scores.published_curve(env_id)
    if not published:
        return
    ours = {r["env_steps"]: r for r in rows}
    table = []
    for step in sorted({p[0] for curve in published.values() for p in curve}):
        if step not in ours:
            continue
        r = ours[step]
        row = dict(env_steps=step, control_steps=step * scores.CONTROL_STEPS_PER_ENV_STEP,
                   ezv=f"{r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} ({r['seeds']})")
        for algorithm, curve in sorted(published.items()):
            point = next((p for p in curve if p[0] == step), None)
            row[algorithm] = f"{point[1]:.1f} ({point[2]})" if point else "-"
        table.append(row)
    if table:
        title = f"{env_id}: ezv beside published curves (mean (seeds); their steps are control steps, 2 per env step)"
        print_table(title, table, list(table[0]))


if __name__ == "__main__":
    main()
