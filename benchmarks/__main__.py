"""Benchmark suite entry point: `python -m benchmarks <name> [options]` (run from the repo root).

Each sub-benchmark prints a table and can write JSON (`--json PATH`); `--quick` keeps it short.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "envs": "env steps/s per backend inside a jitted scan",
    "loop": "full-loop env steps/s, updates/s and a per-stage profile of one preset",
    "learning": "evaluation return vs env steps and wall-clock over seeds",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in SUBCOMMANDS:
        print(__doc__)
        for name, what in SUBCOMMANDS.items():
            print(f"  {name:10s} {what}")
        sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2)
    module = importlib.import_module(f"benchmarks.{sys.argv[1]}")
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
