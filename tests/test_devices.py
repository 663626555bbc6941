"""Data parallelism over local devices, on CPU devices simulated with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (set in a child process: it must precede jax's start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cli_helpers import TINY_FLAGS

TWO_DEVICES = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip(),
               "JAX_PLATFORMS": "cpu"}


def run_python(code: str, timeout: int = 900) -> dict:
    env = dict(os.environ, **TWO_DEVICES)
    if "EZV_TEST_XLA_CACHE" in env:
        env["JAX_COMPILATION_CACHE_DIR"] = env["EZV_TEST_XLA_CACHE"]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_devices_train_one_network_on_split_envs_and_batches(tmp_path):
    out = run_python(f"""
        import json, jax, numpy as np
        from ezv.train import resolve_config, train
        from ezv.program import Program
        from ezv import checkpoint as ckpt
        flags = {TINY_FLAGS!r}
        run_dir = {str(tmp_path / "run")!r}
        cfg = resolve_config(["--env-id", "CartPole-v1", "--devices", "2", "--run-dir", run_dir, *flags])
        train(cfg)
        program = Program(cfg)
        state = ckpt.restore_state(run_dir, 80, program.abstract_state())
        replicas_equal = all(bool(np.array_equal(np.asarray(x[0]), np.asarray(x[1])))
                             for x in jax.tree.leaves(state.params))
        envs_differ = not np.array_equal(np.asarray(state.replay.obs[0]), np.asarray(state.replay.obs[1]))
        rows = [json.loads(l) for l in open(run_dir + "/metrics.jsonl")]
        print(json.dumps(dict(devices=jax.local_device_count(), replicas_equal=replicas_equal,
                              envs_differ=envs_differ, shape=list(state.replay.obs.shape),
                              steps=[r["env_steps"] for r in rows], updates=rows[-1]["updates"],
                              episodes=rows[-1]["eval_episodes"])))
    """)
    assert out["devices"] == 2
    assert out["shape"][:3] == [2, 100, 2]  # [devices, rows per env, envs per device]
    assert out["replicas_equal"], "every device must hold the same network after the updates"
    assert out["envs_differ"], "each device steps its own envs"
    assert out["steps"] == [40, 80] and out["updates"] == 20 and out["episodes"] == 2


def test_devices_must_divide_the_batch_and_exist(capsys, tmp_path):
    from ezv.train import main

    for flags, named in ((["--devices", "3"], "local"), (["--devices", "2", "--learner.batch-size", "7"], "divisible")):
        with pytest.raises(SystemExit) as info:
            main(["--env-id", "CartPole-v1", "--run-dir", str(tmp_path / "r"), *TINY_FLAGS, *flags])
        assert info.value.code == 2
        assert named in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_devices_learn_cartpole_like_one(tmp_path):
    out = run_python(f"""
        import json
        from ezv.train import resolve_config, train
        run_dir = {str(tmp_path / "run")!r}
        train(resolve_config(["--env-id", "CartPole-v1", "--devices", "2", "--total-env-steps", "10000",
                              "--run-dir", run_dir, "--quiet"]))
        rows = [json.loads(l) for l in open(run_dir + "/metrics.jsonl")]
        print(json.dumps([r["eval_return_mean"] for r in rows if r.get("eval_return_mean") is not None]))
    """, timeout=1800)
    assert max(out) >= 200, out
