"""Run directory, `config.yaml`, `metrics.jsonl` and the progress display."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import yaml


def default_run_dir(env_id: str, seed: int) -> str:
    name = env_id.replace("/", "_")
    return os.path.join("runs", f"{name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(path: str) -> str:
    """Create `path`; refuse to write into a directory that already holds a run's files."""
    if os.path.isdir(path) and any(os.scandir(path)):
        raise FileExistsError(
            f"run directory {path!r} already exists and is not empty; pass another --run-dir "
            "(nothing in it was touched)."
        )
    os.makedirs(path, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # dtypes, classes: their names


def write_config(path: str, cfg: Any, extra: dict[str, Any]) -> None:
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump({"config": _plain(cfg), **_plain(extra)}, f, sort_keys=False)


class MetricsLog:
    """One JSON object per line; each line is flushed so a killed run keeps what it logged."""

    def __init__(self, path: str):
        self.file = open(os.path.join(path, "metrics.jsonl"), "a")

    def write(self, row: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


class Progress:
    """A rich progress bar (env steps, steps/s, updates/s, ETA, latest returns), or plain lines."""

    def __init__(self, total_env_steps: int, quiet: bool):
        self.total = total_env_steps
        self.quiet = quiet or not sys.stdout.isatty()
        self.bar = None
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self.bar = RichProgress(
                TextColumn("[bold]env steps"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[returns]}"),
            )
            self.task = self.bar.add_task("train", total=total_env_steps, rates="", returns="")
            self.bar.start()

    def update(self, row: dict[str, Any], steps_per_s: float, updates_per_s: float, eval_return: float | None) -> None:
        rates = f"{steps_per_s:,.0f} steps/s {updates_per_s:,.1f} upd/s"
        returns = f"train {_fmt(row.get('train_return_mean'))} eval {_fmt(eval_return)}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["env_steps"], rates=rates, returns=returns)
        else:
            line = f"env_steps {row['env_steps']:>9,d}/{self.total:,d} updates {row['updates']:>8,d} | {rates} | {returns}"
            if row.get("loss") is not None:
                line += f" | loss {row['loss']:.3f}"
            print(line, flush=True)

    def print(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
