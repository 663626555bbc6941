"""Behaviour-unchanged check for refactors: the same runs, same seed, same machine, identical metrics.

    python -m benchmarks identity record   # before a refactor: writes the baseline of this machine
    python -m benchmarks identity check    # after: reruns, compares every field but timings

Short runs cover both action kinds and every state layout a single machine has: CartPole-v1
(discrete, `classic` preset), dmc/CartpoleBalance (continuous, `control` preset), two CartPole seeds
vmapped with an offline phase, and two seeds sharing one envpool pool (CartpoleBalance-v1). Their
`metrics.jsonl` rows (losses, returns, search values, evaluations) must be bit-identical; only
wall-clock fields may differ. A baseline is only comparable on the machine and jax version that wrote
it (XLA's float results depend on the CPU's instruction set and the compiler), so it lives under
`benchmarks/identity/<machine>/` with the machine's description beside it. `record --runs NAME` adds
one run's baseline (run it from a checkout of the code before the change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from benchmarks.common import machine

# The classic preset's values when the baseline was recorded, pinned so that tuning the preset does
# not invalidate it.
CLASSIC_AS_RECORDED = ["--log-interval", "1000", "--eval-interval", "2000", "--learner.batch-size", "128"]
RUNS = {
    "cartpole": ["--env-id", "CartPole-v1", "--total-env-steps", "4000", "--seed", "0", *CLASSIC_AS_RECORDED],
    "cartpole_balance": ["--env-id", "dmc/CartpoleBalance", "--preset", "control", "--total-env-steps", "3000",
                         "--seed", "0"],
    # Seeds vmapped in one program, then the offline phase.
    "cartpole_seeds_offline": ["--env-id", "CartPole-v1", "--total-env-steps", "2000", "--num-seeds", "2",
                               "--offline-updates", "300", "--seed", "0", *CLASSIC_AS_RECORDED],
    # Seeds sharing one envpool pool (the layout whose iteration is built from vmapped phases).
    "envpool_seeds": ["--env-id", "CartpoleBalance-v1", "--preset", "control", "--total-env-steps", "2000",
                      "--num-seeds", "2", "--seed", "0"],
}
TIMING = re.compile(r"(_per_s|_s|wall.*|time.*)$")


def machine_name() -> str:
    m = machine()
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{m['backend']}-{m['processor']}-{m['cpus']}cpu-jax{m['jax']}")


def run_metrics(name: str, workdir: str) -> list[dict]:
    """The metrics rows of one identity run, timing fields removed."""
    run_dir = os.path.join(workdir, name)
    cmd = [sys.executable, "-m", "ezv.train", *RUNS[name], "--run-dir", run_dir, "--quiet"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in row.items() if not TIMING.search(k)} for row in rows]


def differences(expected: list[dict], got: list[dict]) -> list[str]:
    if len(expected) != len(got):
        return [f"{len(got)} rows, expected {len(expected)}"]
    out = []
    for i, (a, b) in enumerate(zip(expected, got)):
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                out.append(f"row {i} (env_steps {a.get('env_steps')}): {key} = {b.get(key, '<missing>')!r}, "
                           f"expected {a.get(key, '<missing>')!r}")
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks identity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("--dir", default=None, help="baseline folder (default benchmarks/identity/<machine>)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args(argv)
    folder = args.dir or os.path.join(os.path.dirname(__file__), "identity", machine_name())
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.runs:
            rows = run_metrics(name, workdir)
            path = os.path.join(folder, f"{name}.jsonl")
            if args.action == "record":
                os.makedirs(folder, exist_ok=True)
                with open(path, "w") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
                with open(os.path.join(folder, "machine.json"), "w") as f:
                    json.dump(machine(), f, indent=2)
                print(f"recorded {len(rows)} rows in {path}")
                continue
            if not os.path.exists(path):
                sys.exit(f"no baseline {path}: run `python -m benchmarks identity record` on this machine first "
                         "(before the refactor, e.g. from a checkout of the previous commit).")
            with open(path) as f:
                expected = [json.loads(line) for line in f if line.strip()]
            diff = differences(expected, rows)
            print(f"{name}: {'identical' if not diff else f'{len(diff)} differences'} ({len(rows)} rows)")
            for line in diff[:20]:
                print("   ", line)
            failed |= bool(diff)
    sys.exit(1 if failed else 0)
