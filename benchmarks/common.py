"""Timing helpers and result tables shared by the benchmarks."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from typing import Any, Callable

import jax

# One env per preset: the network family is what matters to the search and FLOP benchmarks.
PRESET_ENVS = {
    "atari": "Breakout-v5",
    "dmc_state": "dmc/CheetahRun",
    "classic": "CartPole-v1",
    "control": "dmc/CartpoleBalance",
}


def build_agent(preset: str, env_id: str | None = None, flags: list[str] = ()):
    """An `CompiledAgent` of the preset on its env (or `env_id`), with `ezv.train` flags on top."""
    import ezv.envs as envs
    from ezv.agent import CompiledAgent
    from ezv.train import resolve_config

    env_id = env_id or PRESET_ENVS[preset]
    from ezv.program import with_delay

    cfg = resolve_config(["--env-id", env_id, "--preset", preset, *flags])
    return CompiledAgent(cfg, with_delay(cfg, envs.make(env_id, cfg.num_envs, cfg.seed, **cfg.env_options), cfg.delay))


def machine() -> dict[str, Any]:
    device = jax.devices()[0]
    return dict(
        date=datetime.date.today().isoformat(),
        backend=jax.default_backend(),
        device=getattr(device, "device_kind", str(device)),
        cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        jax=jax.__version__,
    )


def time_compiled(fn: Callable, *args, repeats: int = 3) -> tuple[float, float]:
    """(compile+first-run seconds, best steady-state seconds) of a jitted `fn(*args)`."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |")


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], text_columns: int = 1) -> list[str]:
    """Lines of a markdown table (and a blank line after it): one (header, format string over the
    row's fields) per column; the first `text_columns` columns are left-aligned, the rest right."""
    return [
        "| " + " | ".join(header for header, _ in columns) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(columns))) + "|",
        *("| " + " | ".join(fmt.format(**row) for _, fmt in columns) + " |" for row in rows),
        "",
    ]


def save_json(path: str | None, name: str, rows: list[dict[str, Any]]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(benchmark=name, machine=machine(), rows=rows), f, indent=2)
    print(f"wrote {path}")
