"""Tiny `ezv.train` runs shared by the CLI, checkpoint/resume and export/evaluate/plot tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from tiny import TINY_FLAGS  # noqa: F401 - the tiny config as flags, for the CLI tests

from ezv.train import main

# On top of TINY_FLAGS: 400 env steps (10 chunks of 40), a checkpoint every chunk, the newest 3 kept.
LONG = ["--total-env-steps", "400", "--checkpoint-interval", "40", "--keep-checkpoints", "3"]

# Fields of a metrics row that measure the machine, not the run.
TIMING_FIELDS = ("wall_s", "env_steps_per_s", "updates_per_s")


def run_cli(argv: list[str], capsys, code: int | None = None):
    """Run `ezv.train` in this process. Without `code`, expect it to finish and return what it printed
    (`.out`, `.err`); with `code`, expect it to exit with that status and return its stderr."""
    if code is None:
        main(argv)
        return capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    return capsys.readouterr().err


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
    with foreground_sigint():
        return subprocess.Popen([sys.executable, "-m", "ezv.train", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def foreground_sigint():
    """Child processes started inside get a foreground process's SIGINT: Python's handler, unblocked. They
    inherit both from this process, and a pytest started in the background by a shell without job control
    (`cmd &` in a script) ignores SIGINT, as POSIX shells make asynchronous commands do; a run launched from it
    would then go on after a user's Ctrl-C."""
    handler = signal.getsignal(signal.SIGINT)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if handler is not None:  # None: a handler installed outside Python, which Python cannot put back
            signal.signal(signal.SIGINT, handler)
