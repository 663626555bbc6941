"""Tiny `ezv.train` runs shared by the CLI and run-lifecycle tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# A CartPole run that compiles and trains in seconds: 4 envs, chunks of 40 env steps, learning from
# step 44, a 16-wide network.
TINY_FLAGS = [
    "--num-envs", "4", "--total-env-steps", "80", "--log-interval", "40", "--eval-interval", "40",
    "--learning-starts", "44", "--eval-episodes", "2", "--replay.capacity", "400",
    "--learner.batch-size", "8", "--network.latent-dim", "16", "--network.mlp-hidden", "16",
    "--network.mlp-head-hidden", "16", "--network.projection-hidden", "16", "--network.projection-dim", "16",
    "--network.predictor-hidden", "16", "--quiet",
]

# Fields of a metrics row that measure the machine, not the run.
TIMING_FIELDS = ("wall_s", "env_steps_per_s", "updates_per_s")


def read_rows(run_dir: str, name: str = "metrics.jsonl") -> list[dict]:
    with open(os.path.join(run_dir, name)) as f:
        return [json.loads(line) for line in f]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def train_process(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m ezv.train ARGS` in a child process (sharing the session's compilation cache)."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if "EZV_TEST_XLA_CACHE" in env:
        env["JAX_COMPILATION_CACHE_DIR"] = env["EZV_TEST_XLA_CACHE"]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    env.update(extra_env or {})
    return subprocess.Popen([sys.executable, "-m", "ezv.train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
