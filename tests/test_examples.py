"""The worked examples in `examples/` run end to end (their --quick budgets): a user's JAX env and a gymnasium
env, each trained, evaluated and exported through `ezv.Agent`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str, out: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if "EZV_TEST_XLA_CACHE" in env:  # the session's compilation cache
        env["JAX_COMPILATION_CACHE_DIR"] = env["EZV_TEST_XLA_CACHE"]
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick", "--out", out], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_custom_jax_env_example_trains_evaluates_exports_and_reloads(tmp_path):
    out = run_example("custom_jax_env.py", str(tmp_path))
    assert "Reach-v0: " in out and "kept the contract" in out
    assert "trained: 400 env steps" in out and "greedy search over 16 episodes" in out
    assert any(name.endswith(".md") for name in os.listdir(tmp_path / "agents"))


@pytest.mark.parametrize("name", ["gymnasium_env.py"])
def test_the_gymnasium_example_trains_on_the_host_env(tmp_path, name):
    out = run_example(name, str(tmp_path))
    assert "GymCartPole-v1: 300 steps" in out and "trained: 400 env steps" in out and "best evaluation" in out
    assert os.path.isfile(tmp_path / "run" / "best" / "seed0.ezv")
