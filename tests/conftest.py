"""Test-session set-up: one persistent XLA compilation cache, so that the identical tiny programs
that several tests build (CLI runs, their resumes, subprocess runs) compile once per session, and
the one uninterrupted tiny run that the checkpoint/resume and export/evaluate/plot tests share."""

import atexit
import contextlib
import fcntl
import gc
import os
import shutil
import tempfile

import jax
import pytest

from cli_helpers import LONG, TINY_FLAGS

# Compiling is most of this suite's time on a CPU. LLVM's expensive passes are a fifth of it (backend compile
# 102 s -> 82 s for the delayed CLI test) and do not make the tiny programs measurably slower (the learning
# tests: 365 s vs 339 s); LLVM at -O0 would save twice that but made them 60% slower. XLA reads the flag when the
# first computation starts its backend (no import above does); subprocess tests inherit it. RESULTS "The test suite".
FAST_COMPILE = "--xla_llvm_disable_expensive_passes=true"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # xdist's processes inherit the controller's
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

if "EZV_TEST_XLA_CACHE" not in os.environ:  # this session's own cache, removed when it ends
    os.environ["EZV_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="ezv-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["EZV_TEST_XLA_CACHE"], ignore_errors=True)
CACHE_DIR = os.environ["EZV_TEST_XLA_CACHE"]
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a test process per core, at most 4. Most of the suite's time is XLA compiling, which uses one
    core; more processes than that would add memory (each holds its modules' compiled programs) and nothing
    else. The processes share the persistent cache above (xdist's workers inherit this environment)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


# The modules that take longest (minutes each, on a 2-core CPU), started first so that the parallel processes
# (`--dist loadfile`: a module per process at a time) finish together instead of one ending the suite alone.
LONGEST_FIRST = ("test_modes.py", "test_learning.py", "test_checkpoint_resume.py", "test_delay.py",
                 "test_multihost.py", "test_agent.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop every module's compiled programs when it ends. Each XLA:CPU executable keeps its JIT-compiled
    code in memory mappings, and a whole-suite process holding them all passes Linux's 65,530 mappings per
    process (`vm.max_map_count`), after which compiling aborts the process. The persistent compilation
    cache still serves later modules what they share."""
    yield
    jax.clear_caches()
    gc.collect()


@contextlib.contextmanager
def file_lock(path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
    """400 env steps (10 chunks) of tiny CartPole, uninterrupted: run once per session, by the first test
    process that needs it, while any other process that needs it waits (xdist's processes share the parent
    of their temporary directories). Read-only for the tests."""
    from ezv.train import main

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    run_dir, done = shared / "straight_run", shared / "straight_run.done"
    with file_lock(shared / "straight_run.lock"):
        if not done.exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # what a failed first attempt left
            main(["--env-id", "CartPole-v1", "--run-dir", str(run_dir), *TINY_FLAGS, *LONG])
            done.touch()
    return str(run_dir)
