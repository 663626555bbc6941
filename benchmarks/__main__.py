"""Benchmark suite entry point: `python -m benchmarks <name> [options]` (run from the repo root).

Each sub-benchmark prints a table and can write JSON (`--json PATH`); `--quick` keeps it short.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "all": "every benchmark below (but learning) with the ceiling analysis and a markdown summary",
    "peak": "the device's measured matmul peak",
    "envs": "env steps/s per backend inside a jitted scan",
    "search": "search simulations/s and roots/s vs batch size (Atari and DMC networks)",
    "loop": "full-loop env steps/s, updates/s, stage split (learner) and model FLOPs of one preset",
    "seeds": "wall-clock of N = 1, 4, 8 seeds vmapped in one program",
    "launches": "kernels and host syncs per loop stage: the GPU launch proxy (device-independent)",
    "flops": "model FLOPs of an update and an acting iteration per preset (device-independent)",
    "xla_flags": "the search under XLA flag sets that put loops in CUDA graphs (GPU; one process per set)",
    "solve": "whole-process time to a greedy evaluation threshold (CartPole 195), cold and warm compile cache",
    "multihost": "one run as 1 process x 2 devices vs 2 processes x 1 device (jax.distributed): updates/s, all-reduce",
    "learning": "evaluation return vs env steps and wall-clock over seeds",
    "pixel_probe": "pixel cartpole: do frames lag the state, and can the conv trunk read the state off them",
    "reward_probe": "the reward model alone, trained supervised on a fixed random-action replay (held-out CE)",
    "identity": "refactor check: two short runs must log the same metrics as this machine's baseline",
}
MODULES = {"all": "suite"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in SUBCOMMANDS:
        print(__doc__)
        for name, what in SUBCOMMANDS.items():
            print(f"  {name:10s} {what}")
        sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2)
    module = importlib.import_module(f"benchmarks.{MODULES.get(sys.argv[1], sys.argv[1])}")
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
