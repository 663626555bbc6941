"""Time to solve: wall-clock of a whole `python -m ezv.train` process until its first greedy
evaluation reaches a threshold (start-up, imports and compilation included).

    python -m benchmarks solve [--env-id CartPole-v1] [--threshold 195] [--seeds 0 1 2]
                               [--timeout-s 300] [--json out.json] [ezv.train flags ...]

The first seed runs first with an empty XLA compilation cache (`cold`: what a first run of a config
on a machine costs), then every seed runs with the cache it filled (`warm`: every later run of the
same config; the programs do not depend on the seed). The clock starts before the process does and
stops when `metrics.jsonl` gets the evaluation row that reaches the threshold; the process is then
stopped. The row's env steps and the compile time the run printed are reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import print_table, save_json

_COMPILED = re.compile(r"compiled the training chunk in ([\d.]+)s")


def first_solving_row(metrics_path: str, threshold: float) -> dict[str, Any] | None:
    if not os.path.exists(metrics_path):
        return None
    with open(metrics_path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a row still being written
            row = json.loads(line)
            if row.get("eval_return_mean") is not None and row["eval_return_mean"] >= threshold:
                return row
    return None


def time_to_solve(env_id: str, seed: int, threshold: float, cache_dir: str, timeout_s: float,
                  flags: list[str]) -> dict[str, Any]:
    """One `ezv.train` process, timed from its start to the first evaluation at or above `threshold`."""
    work = tempfile.mkdtemp(prefix="ezv-solve-")
    run_dir = os.path.join(work, "run")
    log_path = os.path.join(work, "stdout.txt")
    env = dict(os.environ, EZV_COMPILATION_CACHE=cache_dir)  # ezv.compile_cache takes this before any other
    argv = [sys.executable, "-m", "ezv.train", "--env-id", env_id, "--seed", str(seed), "--run-dir", run_dir,
            "--quiet", *flags]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    row = None
    try:
        while time.perf_counter() - start < timeout_s:
            row = first_solving_row(os.path.join(run_dir, "metrics.jsonl"), threshold)
            if row is not None or process.poll() is not None:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with open(log_path) as f:
        output = f.read()
    compiled = _COMPILED.search(output)
    shutil.rmtree(work, ignore_errors=True)
    if row is None and process.returncode not in (None, 0, -signal.SIGKILL):
        raise RuntimeError(f"ezv.train failed (exit {process.returncode}):\n{output[-2000:]}")
    return dict(
        env_id=env_id,
        seed=seed,
        solved=row is not None,
        seconds=elapsed if row is not None else float("nan"),
        env_steps=row["env_steps"] if row else None,
        eval_return=row["eval_return_mean"] if row else None,
        compile_s=float(compiled.group(1)) if compiled else float("nan"),
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks solve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--threshold", type=float, default=195.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--caches", nargs="+", default=["cold", "warm"], choices=["cold", "warm"],
                        help="warm alone still runs the first seed once first, untimed, to fill the cache")
    parser.add_argument("--json", default=None)
    args, flags = parser.parse_known_args(argv)
    rows = []
    cache_dir = tempfile.mkdtemp(prefix="ezv-solve-cache-")  # every seed compiles the same programs
    try:
        runs = [("cold", args.seeds[0])] if "cold" in args.caches else []
        if "warm" in args.caches:
            if not runs:  # fill the cache first (not timed)
                time_to_solve(args.env_id, args.seeds[0], args.threshold, cache_dir, args.timeout_s, flags)
            runs += [("warm", seed) for seed in args.seeds]
        for cache, seed in runs:
            row = dict(cache=cache, **time_to_solve(args.env_id, seed, args.threshold, cache_dir, args.timeout_s,
                                                    flags))
            rows.append(row)
            print(row, flush=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print_table(f"Time to a greedy evaluation >= {args.threshold:g} on {args.env_id} (whole process)", rows,
                ["seed", "cache", "solved", "seconds", "env_steps", "eval_return", "compile_s"])
    save_json(args.json, "solve", [dict(row, flags=flags, threshold=args.threshold) for row in rows])
    return rows


if __name__ == "__main__":
    main()
