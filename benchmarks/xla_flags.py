"""The search's time under XLA flag sets that change how loops reach the GPU.

    python -m benchmarks xla_flags [--presets atari] [--batches 4 1536] [--sets default while_graphs]
                                   [--json out.json]

The search is launch-bound on a GPU (`benchmarks/RESULTS.md`): each mctx simulation is a few
`while_loop`s whose iterations the host drives, one predicate copy per iteration. XLA:GPU can
record loops into CUDA graphs with conditional nodes (command buffers) so that the device runs them
without the host. Each flag set runs `python -m benchmarks search` in its own process (XLA reads
its flags once per process) with the set appended to `XLA_FLAGS`; a set this jax does not know
fails alone. On a CPU the GPU flags are parsed and ignored, so this only checks that they parse.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.common import print_table, save_json

FLAG_SETS = {
    "default": "",
    # Loops and conditionals inside CUDA graphs (the other command types are XLA's defaults).
    "while_graphs": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE "
                    "--xla_gpu_graph_min_graph_size=1",
    # The same, with XLA unrolling loops of known trip count inside the graphs.
    "while_graphs_unrolled": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,"
                             "WHILE --xla_gpu_graph_min_graph_size=1 --xla_gpu_command_buffer_unroll_loops=true",
}


def run_set(name: str, presets: list[str], batches: list[int], timeout_s: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "search.json")
        env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FLAG_SETS[name]}".strip())
        argv = [sys.executable, "-m", "benchmarks", "search", "--presets", *presets,
                "--batches", *map(str, batches), "--json", out]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"[xla_flags] {name} took longer than {timeout_s:.0f}s")
            return [dict(flags=name, error=f"timeout {timeout_s:.0f}s")]
        if done.returncode != 0:
            print(f"[xla_flags] {name} failed (exit {done.returncode}):\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
            return [dict(flags=name, error=f"exit {done.returncode}")]
        with open(out) as f:
            rows = json.load(f)["rows"]
    return [dict(flags=name, **row) for row in rows]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks xla_flags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["atari"])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 1536])
    parser.add_argument("--sets", nargs="+", default=list(FLAG_SETS), choices=list(FLAG_SETS))
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per flag set")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = [row for name in args.sets for row in run_set(name, args.presets, args.batches, args.timeout_s)]
    print_table("Search time per XLA flag set (acting settings, fresh networks)", rows,
                ["flags", "preset", "batch", "simulations", "ms_per_search", "roots_per_s", "compile_s", "error"])
    save_json(args.json, "xla_flags", rows)
    return rows


if __name__ == "__main__":
    main()
