"""Run directory, `config.yaml`, `metrics.jsonl` and the progress display."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterator

from ezv.config import ConfigError, to_plain
from ezv.files import write_atomic



def file_safe(env_id: str) -> str:
    """An env id as part of a file name (`dmc/CheetahRun` -> `dmc_CheetahRun`, `pkg.envs:make` -> `pkg.envs_make`)."""
    return env_id.replace("/", "_").replace(":", "_")


def default_run_dir(env_id: str, seed: int) -> str:
    return os.path.join("runs", f"{file_safe(env_id)}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(path: str) -> str:
    """Create `path`; refuse to write into a directory that already holds a run's files."""
    if os.path.isdir(path) and any(os.scandir(path)):
        raise FileExistsError(
            f"run directory {path!r} already exists and is not empty; pass another --run-dir "
            "(nothing in it was touched)."
        )
    os.makedirs(path, exist_ok=True)
    return path


def row_progress(row: dict[str, Any]) -> int:
    """A metrics row's place on the checkpoint scale: env steps, plus offline updates after collection."""
    return int(row.get("env_steps", 0)) + int(row.get("offline_updates", 0) if row.get("offline") else 0)


def read_rows(run_dir: str) -> Iterator[dict[str, Any]]:
    """The rows of a run's metrics.jsonl, without a last line cut by a kill."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def eval_rows(run_dir: str, default_seed: int = 0) -> dict[int, list[dict[str, Any]]]:
    """The rows of a run that carry an evaluation, per seed, in order (offline-phase rows included,
    marked `offline`)."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for row in read_rows(run_dir):
        if row.get("eval_return_mean") is not None:
            by_seed.setdefault(int(row.get("seed", default_seed)), []).append(row)
    return by_seed


def rewind_metrics(path: str, step: int) -> int:
    """Before resuming from checkpoint `step`: keep the metrics rows up to it in metrics.jsonl and
    move the later ones (work that the checkpoint does not hold, and a line cut by a kill) to
    metrics.discarded.jsonl, so nothing is lost and nothing is counted twice. Returns how many moved."""
    target = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(target):
        return 0
    keep, drop = [], []
    with open(target) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                drop.append(line if line.endswith("\n") else line + "\n")
                continue
            (keep if row_progress(row) <= step else drop).append(line)
    if drop:
        with open(os.path.join(path, "metrics.discarded.jsonl"), "a") as f:
            f.write(f'{{"discarded_on_resume_from": {step}, "time": "{time.strftime("%Y-%m-%d %H:%M:%S")}"}}\n')
            f.writelines(drop)
        write_atomic(target, "".join(keep))
    return len(drop)


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


class RunLog:
    """Where a run's metrics rows go: metrics.jsonl always, TensorBoard event files (RUN_DIR/
    tensorboard) unless `--no-tensorboard`, Weights & Biases with `--wandb`. Rows carry a `seed`;
    with several seeds, TensorBoard and W&B tags are prefixed `seed<s>/`."""

    SCALARS_SKIP = frozenset({"seed", "env_steps", "offline"})

    def __init__(self, path: str, cfg: Any, purge_step: int | None = None):
        self.jsonl = MetricsLog(path)
        self.multi = cfg.num_seeds > 1
        self.tb = None
        self.wandb = None
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter

            # On resume, events past the checkpoint (work that is being redone) are purged.
            self.tb = SummaryWriter(os.path.join(path, "tensorboard"), purge_step=purge_step)
        if cfg.wandb:
            self.wandb = _wandb_run(path, cfg)

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.jsonl.write(row)
            prefix = f"seed{row['seed']}/" if self.multi else ""
            step = row_progress(row)
            scalars = {f"{prefix}{k}": v for k, v in row.items()
                       if k not in self.SCALARS_SKIP and isinstance(v, (int, float)) and v is not None
                       and not isinstance(v, bool)}
            if self.tb is not None:
                for name, value in scalars.items():
                    self.tb.add_scalar(name, value, step)
            if self.wandb is not None:
                self.wandb.log(scalars, step=step)
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class NoLog:
    """The log of a multi-process run's processes other than 0 (which writes the rows for all)."""

    def write(self, rows: list[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


def _wandb_run(path: str, cfg: Any):
    try:
        import wandb
    except ImportError as e:

        raise ConfigError("--wandb needs the wandb package: pip install wandb (or drop --wandb).") from e
    id_file = os.path.join(path, "wandb_id")
    if os.path.exists(id_file):
        with open(id_file) as f:
            run_id = f.read().strip()
    else:
        run_id = wandb.util.generate_id()
        with open(id_file, "w") as f:
            f.write(run_id)
    return wandb.init(project=cfg.wandb_project, id=run_id, resume="allow", dir=path, config=to_plain(cfg),
                      name=os.path.basename(os.path.normpath(path)))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


class Progress:
    """A rich progress bar (env steps, steps/s, updates/s, ETA, latest returns), or plain lines."""

    def __init__(self, total_env_steps: int, quiet: bool, silent: bool = False):
        self.total = total_env_steps
        self.quiet = quiet or silent or not sys.stdout.isatty()
        self.silent = silent  # a multi-process run's other processes: process 0 reports for all
        self.bar = None
        if not self.quiet:
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn,
            )

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

    def update(self, rows: list[dict[str, Any]], steps_per_s: float, updates_per_s: float,
               eval_return: float | None) -> None:
        """One chunk's rows (one per seed): the bar shows their mean returns."""
        if self.silent:
            return
        row = dict(rows[0])
        for key in ("train_return_mean", "loss"):
            values = [r[key] for r in rows if r.get(key) is not None]
            row[key] = sum(values) / len(values) if values else None
        rates = f"{steps_per_s:,.0f} steps/s {updates_per_s:,.1f} upd/s"
        returns = f"train {_fmt(row.get('train_return_mean'))} eval {_fmt(eval_return)}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["env_steps"], rates=rates, returns=returns)
        else:
            line = (f"env_steps {row['env_steps']:>9,d}/{self.total:,d} updates {row['updates']:>8,d} | {rates} "
                    f"| {returns}")
            if row.get("loss") is not None:
                line += f" | loss {row['loss']:.3f}"
            print(line, flush=True)

    def print(self, message: str) -> None:
        if self.silent:
            return
        if self.bar is not None:
            self.bar.console.print(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
