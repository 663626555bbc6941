"""Whether a compiled training chunk fits the memory its devices have left, asked right after compiling.

Without this, a preset too big for the machine (`dmc_image` on a 24 GiB CPU: 26.7 GB of the chunk's working
buffers) compiles for minutes and then dies in XLA with "Out of memory allocating N bytes", which names
neither the cause nor a way out. XLA's own memory analysis of the executable gives the working memory
(temporaries) exactly; the run's state is already allocated by then, so it must fit in what is free."""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from ezv import distributed
from ezv.config import PRESET_NAMES, Config, ConfigError

GB = 1e9
OPT_OUT = "EZV_MEMORY_CHECK=off"


class MemoryShortfall(ConfigError):
    """The compiled chunk needs more working memory than its device has free."""


def free_bytes(device: Any) -> int | None:
    """Bytes a new buffer on `device` can still take; None where the platform does not say. On a CPU: the
    machine's, which its simulated devices share."""
    stats = device.memory_stats()
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
    head = (f"the training chunk of this config needs {working / GB:.1f} GB of working memory beyond the run's "
            f"state ({state / GB:.1f} GB, allocated), and {where} has {free / GB:.1f} GB free: it would fail "
            f"with XLA's out-of-memory error at its first step. Nothing was trained.")
    if cfg.resume is not None:  # a resumed run keeps its config: only the machine can change
        return f"{head} Free memory on this machine or resume the run on a bigger one ({OPT_OUT} skips this check)."
    smaller = f"{cfg.preset}_small"
    ways = [f"a smaller --learner.batch-size (now {cfg.learner.batch_size})"]
    if smaller in PRESET_NAMES:
        ways.insert(0, f"--preset {smaller} (sized for a CPU)")
    if cfg.num_seeds > 1:
        ways.append(f"fewer --num-seeds (now {cfg.num_seeds})")
    return (f"{head} Use {' or '.join(ways)}, or a machine with more memory; the run directory holds only its "
            f"config, so remove it or pass another --run-dir ({OPT_OUT} skips this check).")


def chunk_needs(compiled: Any, devices: list[Any]) -> tuple[float, float, float]:
    """(working, state, free) bytes for this process's devices; nothing needed where XLA or the platform
    does not say. XLA's analysis is per device (an SPMD program's is one shard's)."""
    try:  # a debugging API in JAX: whatever it does, the run goes on unchecked
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        analysis = None
    if analysis is None or not devices:
        return 0.0, 0.0, math.inf
    working, state = float(analysis.temp_size_in_bytes), float(analysis.argument_size_in_bytes)
    if devices[0].platform == "cpu":  # the simulated devices share the machine's memory
        free = free_bytes(devices[0])
        return working * len(devices), state * len(devices), math.inf if free is None else float(free)
    frees = [free_bytes(d) for d in devices]
    return working, state, math.inf if None in frees else float(min(frees))


def every_process(row: tuple[float, float, float]) -> list[tuple[float, float, float]]:
    """Each process's (working, state, free): all of them refuse together, rather than one leaving and the
    others waiting for it in their first collective."""
    if distributed.process_count() == 1:
        return [row]
    rows = np.asarray(distributed.gather(np.array(row, np.float32))).reshape(-1, 3)
    return [tuple(float(v) for v in r) for r in rows]


def check_chunk_fits(cfg: Config, compiled: Any, devices: list[Any]) -> None:
    """Raise `MemoryShortfall` if the compiled chunk cannot run on `devices` (this process's devices of the run)
    or on another process's. Every process of a run must call it."""
    if os.environ.get("EZV_MEMORY_CHECK", "").lower() == "off":
        return
    rows = every_process(chunk_needs(compiled, devices))
    worst = max(range(len(rows)), key=lambda i: rows[i][0] - rows[i][2])
    working, state, free = rows[worst]
    if free == math.inf:
        return
    kind = devices[0].platform if devices else "cpu"
    where = "this machine" if kind == "cpu" else f"a {devices[0].device_kind}"
    if len(rows) > 1:
        where = f"process {worst}'s {'machine' if kind == 'cpu' else 'device'}"
    message = shortfall_message(cfg, int(working), int(state), int(free), where)
    if message:
        raise MemoryShortfall(message)


def local_devices(mesh: Any) -> list[Any]:
    """This process's devices of the run: the mesh's where there is one, else the default device."""
    if mesh is None:
        return [jax.devices()[0]]
    return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
