"""Several processes training one run (`ezv.distributed`): two processes on this machine joined by
`jax.distributed` over 127.0.0.1 (gloo collectives on CPU), one simulated device each, against one
process with two devices. Every child process is bounded by a timeout and killed when its test ends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from cli_helpers import TINY_FLAGS, read_rows, without_timing

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multihost_worker.py")
# The tiny two-device run of test_devices.py (its compiled program is in the session's cache), checkpointed at
# both of its chunks (40 and 80 env steps).
RUN_FLAGS = ["--env-id", "CartPole-v1", *TINY_FLAGS, "--devices", "2", "--checkpoint-interval", "40"]
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict[str, str]:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags,
               PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    if "EZV_TEST_XLA_CACHE" in env:
        env["JAX_COMPILATION_CACHE_DIR"] = env["EZV_TEST_XLA_CACHE"]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


@contextlib.contextmanager
def processes(commands: list[list[str]], devices: int):
    """Start every command; on leaving, kill whatever still runs."""
    started = [subprocess.Popen(c, env=child_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.communicate()


def launch_flags(port: int, count: int, index: int) -> list[str]:
    return ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(count), "--process-id", str(index),
            "--heartbeat-timeout", "10"]


def train_workers(tmp, name: str, flags: list[str], count: int) -> list[dict]:
    """`count` processes (one device each) training with `flags`; each one's digest of its networks."""
    port, outs = free_port(), [str(tmp / f"{name}-{i}.json") for i in range(count)]
    commands = [[sys.executable, WORKER, outs[i], *flags, *launch_flags(port, count, i)] for i in range(count)]
    with processes(commands, devices=1) as started:
        for p in started:
            _, err = p.communicate(timeout=TIMEOUT_S)
            assert p.returncode == 0, err[-3000:]
    return [json.load(open(o)) for o in outs]


@pytest.fixture(scope="module")
def one_process_two_devices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_process")
    run_dir = str(tmp / "run")
    out = str(tmp / "digest.json")
    proc = subprocess.run([sys.executable, WORKER, out, *RUN_FLAGS, "--run-dir", run_dir], env=child_env(2),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.load(open(out))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two_processes")
    run_dir = str(tmp / "run")
    return run_dir, train_workers(tmp, "train", [*RUN_FLAGS, "--run-dir", run_dir], 2)


def test_two_processes_train_the_same_networks_and_curve_as_one_process_with_two_devices(
        one_process_two_devices, two_processes):
    single_dir, single = one_process_two_devices
    multi_dir, workers = two_processes
    assert [w["process"] for w in workers] == [0, 1]
    # Each process holds its own device's replica; all equal, and equal to the one-process run's bit for bit:
    # the same per-device programs, and a mean over two devices does not depend on where they are.
    assert set(workers[0]["digests"]) == {"0"} and set(workers[1]["digests"]) == {"1"}
    assert workers[0]["digests"]["0"] == workers[1]["digests"]["1"] == single["digests"]["0"] == single["digests"]["1"]
    assert without_timing(read_rows(multi_dir)) == without_timing(read_rows(single_dir))


def test_process_zero_alone_writes_the_run_and_every_process_its_checkpoint_shards(two_processes):
    run_dir, _ = two_processes
    rows = read_rows(run_dir)
    assert [r["env_steps"] for r in rows] == [40, 80], "one row per chunk, not one per process"
    assert all(r.get("eval_episodes") == 2 for r in rows), "one evaluation per seed, not one per process"
    newest = os.path.join(run_dir, "checkpoints", "80")
    meta = json.load(open(os.path.join(newest, "meta", "metadata")))
    assert meta["processes"] == 2
    assert os.path.exists(os.path.join(newest, "checksums.json"))
    assert os.path.exists(os.path.join(run_dir, "best", "seed0.ezv"))


def test_a_two_process_checkpoint_is_exported_by_one_process_with_one_device(two_processes, tmp_path):
    from ezv.export import export_run
    from ezv.inference import load_agent

    run_dir, _ = two_processes
    (path,) = [p for p in export_run(run_dir, str(tmp_path)) if p.endswith(".ezv")]
    assert load_agent(path).meta["seed"] == 0


def test_a_two_process_run_resumes_exactly_from_its_checkpoint(two_processes, tmp_path):
    run_dir, finished = two_processes
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    resumed = train_workers(tmp_path, "resume", ["--resume", copy, "--resume-step", "40"], 2)
    assert [w["digests"] for w in resumed] == [w["digests"] for w in finished]
    assert without_timing(read_rows(copy)) == without_timing(read_rows(run_dir))


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_processes_with_the_same_devices(one_process_two_devices, tmp_path):
    run_dir, finished = one_process_two_devices
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    resumed = train_workers(tmp_path, "resume", ["--resume", copy, "--resume-step", "40"], 2)
    assert [w["digests"][str(w["process"])] for w in resumed] == [finished["digests"]["0"]] * 2
    assert without_timing(read_rows(copy)) == without_timing(read_rows(run_dir))


def test_when_one_process_dies_the_other_stops_with_an_error_within_a_bounded_time(tmp_path):
    port = free_port()
    commands = [[sys.executable, "-m", "ezv.train", *RUN_FLAGS, "--run-dir", str(tmp_path / "run"),
                 *launch_flags(port, 2, i)] for i in range(2)]
    with processes(commands, devices=1) as (first, second):
        # Once process 0 has compiled, both chunks' collectives are still ahead of it.
        for line in first.stdout:
            if line.startswith("compiled the training chunk"):
                break
        else:
            pytest.fail(f"process 0 ended before training: {first.communicate()[1][-2000:]}")
        second.kill()
        killed_at = time.monotonic()
        _, err = first.communicate(timeout=120)
        stopped_after = time.monotonic() - killed_at
    assert first.returncode == 4, err[-2000:]
    assert "another process of this run stopped" in err
    assert stopped_after < 60, f"the surviving process took {stopped_after:.0f}s to stop"


def test_launch_flags_are_checked_before_anything_starts(capsys, tmp_path):
    from ezv import distributed
    from ezv.train import main

    launch, rest = distributed.parse_launch(["--env-id", "CartPole-v1", "--process-id", "1"],
                                            environ={"JAX_NUM_PROCESSES": "2"})
    assert (launch.num_processes, launch.process_id, launch.coordinator_address) == (2, 1, None)
    assert rest == ["--env-id", "CartPole-v1"]
    assert any("all three" in e for e in distributed.launch_errors(launch))
    bad = distributed.Launch(coordinator_address="127.0.0.1", num_processes=2, process_id=2)
    assert {"host:port", "0..1"} <= {w for e in distributed.launch_errors(bad) for w in ("host:port", "0..1") if w in e}
    with pytest.raises(SystemExit) as info:
        main(["--env-id", "CartPole-v1", "--run-dir", str(tmp_path / "r"), "--num-processes", "2", *TINY_FLAGS])
    assert info.value.code == 2
    assert "--coordinator-address" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
