"""Whether a compiled training chunk fits the memory its devices have left, asked right after compiling.

Without this, a preset too big for the machine (`dmc_image` on a 24 GiB CPU: 26.7 GB of the chunk's working
buffers) compiles for minutes and then dies in XLA with "Out of memory allocating N bytes", which names
neither the cause nor a way out. XLA's own memory analysis of the executable gives the working memory
(temporaries) exactly; the run's state is already allocated by then, so it must fit in what is free."""

from __future__ import annotations

from typing import Any

import jax

from ezv.config import PRESET_NAMES, Config, ConfigError

GB = 1e9


class MemoryShortfall(ConfigError):
    """The compiled chunk needs more working memory than its device has free."""


def free_bytes(device: Any) -> int | None:
    """Bytes a new buffer on `device` can still take; None where the platform does not say."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:  # GPU: JAX's allocator pool, the state already in it
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                fields = dict(line.split(":", 1) for line in f)
        except OSError:
            return None
        if "MemAvailable" in fields:
            return int(fields["MemAvailable"].split()[0]) * 1024
    return None


def shortfall_message(cfg: Config, working: int, state: int, free: int, where: str) -> str | None:
    """The error for a chunk that needs `working` bytes beyond its `state` where `free` are left; None if it fits."""
    if working <= free:
        return None
    smaller = f"{cfg.preset}_small"
    ways = [f"a smaller --learner.batch-size (now {cfg.learner.batch_size})"]
    if smaller in PRESET_NAMES:
        ways.insert(0, f"--preset {smaller} (sized for a CPU)")
    if cfg.num_seeds > 1:
        ways.append(f"fewer --num-seeds (now {cfg.num_seeds})")
    return (f"the training chunk of this config needs {working / GB:.1f} GB of working memory beyond the run's "
            f"state ({state / GB:.1f} GB, allocated), and {where} has {free / GB:.1f} GB free: it would fail "
            f"with XLA's out-of-memory error at its first step. Use {' or '.join(ways)}, or a machine with more "
            f"memory. Nothing was trained.")


def check_chunk_fits(cfg: Config, compiled: Any, devices: list[Any]) -> None:
    """Raise `MemoryShortfall` if the compiled chunk cannot run on `devices` (this process's devices of the run)."""
    analysis = compiled.memory_analysis()
    if analysis is None or not devices:
        return
    working = int(analysis.temp_size_in_bytes)
    state = int(analysis.argument_size_in_bytes)
    device = devices[0]
    if device.platform == "cpu":  # the simulated CPU devices share the host's memory
        working, state = working * len(devices), state * len(devices)
    free = free_bytes(device)
    if free is None:
        return
    where = "this machine" if device.platform == "cpu" else f"{device.device_kind} {device.id}"
    message = shortfall_message(cfg, working, state, free, where)
    if message:
        raise MemoryShortfall(message)


def local_devices(mesh: Any) -> list[Any]:
    """This process's devices of the run: the mesh's where there is one, else the default device."""
    if mesh is None:
        return [jax.devices()[0]]
    return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
