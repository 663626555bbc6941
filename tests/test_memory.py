"""A config whose training chunk cannot fit the machine is refused right after compiling, with what to change,
instead of dying in XLA's allocator at its first step."""

from __future__ import annotations

import jax
import pytest
from cli_helpers import TINY_FLAGS, run_cli
from ezv import memory
from ezv.config import load_preset


def test_a_chunk_that_fits_passes_and_one_that_does_not_names_the_way_out():
    cfg = load_preset("dmc_image")
    assert memory.shortfall_message(cfg, working=10 * 10**9, state=5 * 10**9, free=20 * 10**9, where="here") is None
    # dmc_image's chunk on a 24 GiB CPU, as measured (benchmarks/RESULTS.md): 26.7 GB of temporaries.
    message = memory.shortfall_message(cfg, working=26_677_304_184, state=5_605_616_556, free=18 * 10**9,
                                       where="this machine")
    assert "26.7 GB of working memory" in message and "(5.6 GB" in message and "18.0 GB free" in message
    assert "--preset dmc_image_small" in message and "--learner.batch-size (now 256)" in message
    # A preset without a small variant only names the batch size.
    assert "--preset" not in memory.shortfall_message(load_preset("classic"), 2, 1, 1, "here")


def test_free_memory_of_a_cpu_device_is_what_the_machine_has_available():
    free = memory.free_bytes(jax.devices("cpu")[0])
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    assert total / 100 < free <= total  # bytes, not kB


def test_the_cli_refuses_a_chunk_larger_than_the_free_memory_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1000)  # a machine with 1 kB left
    run_dir = tmp_path / "run"
    err = run_cli(["--env-id", "CartPole-v1", *TINY_FLAGS, "--run-dir", str(run_dir)], capsys, code=2)
    assert "error: the training chunk of this config needs" in err and "0.0 GB free" in err
    assert not (run_dir / "metrics.jsonl").exists() or (run_dir / "metrics.jsonl").read_text() == ""


class Compiled:
    """An executable whose memory analysis says 1 TB of temporaries over a 1 GB state (per device)."""

    def __init__(self, analysis=True):
        self.analysis = analysis

    def memory_analysis(self):
        if self.analysis is None:
            raise RuntimeError("UNAVAILABLE: not on this backend")
        return type("Analysis", (), {"temp_size_in_bytes": 10**12, "argument_size_in_bytes": 10**9})()


class FakeGpu:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"

    def __init__(self, free):
        self.free = free

    def memory_stats(self):
        return {"bytes_limit": 80 * 10**9, "bytes_in_use": 80 * 10**9 - self.free}


def test_only_a_device_that_reports_its_free_memory_is_checked(monkeypatch):
    cpu = [jax.devices("cpu")[0]]
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)
    memory.check_chunk_fits(load_preset("classic"), Compiled(), cpu)
    memory.check_chunk_fits(load_preset("classic"), Compiled(analysis=None), cpu)  # XLA does not say: unchecked
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10**9)
    with pytest.raises(memory.MemoryShortfall, match="needs 1000.0 GB of working memory"):
        memory.check_chunk_fits(load_preset("classic"), Compiled(), cpu)
    monkeypatch.setenv("EZV_MEMORY_CHECK", "off")
    memory.check_chunk_fits(load_preset("classic"), Compiled(), cpu)


def test_simulated_cpu_devices_add_up_and_gpus_are_checked_one_by_one(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10**9)
    cpus = [jax.devices("cpu")[0]] * 2  # the analysis is per device; two simulated devices share the machine
    with pytest.raises(memory.MemoryShortfall, match="needs 2000.0 GB .* state \\(2.0 GB"):
        memory.check_chunk_fits(load_preset("classic"), Compiled(), cpus)
    monkeypatch.undo()
    roomy, tight = FakeGpu(free=2 * 10**12), FakeGpu(free=10**11)
    memory.check_chunk_fits(load_preset("classic"), Compiled(), [roomy, roomy])
    with pytest.raises(memory.MemoryShortfall, match="a NVIDIA H100 80GB HBM3 has 100.0 GB free"):
        memory.check_chunk_fits(load_preset("classic"), Compiled(), [roomy, tight])


def test_a_resumed_run_is_told_its_config_stays_and_a_seed_sweep_is_told_to_use_fewer_seeds():
    import dataclasses

    cfg = load_preset("dmc_image")
    resumed = memory.shortfall_message(dataclasses.replace(cfg, resume="runs/x"), 3, 1, 1, "here")
    assert "--preset" not in resumed and "resume the run on a bigger one" in resumed
    assert "fewer --num-seeds (now 3)" in memory.shortfall_message(dataclasses.replace(cfg, num_seeds=3), 3, 1, 1, "x")
