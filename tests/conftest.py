"""Test-session set-up: one persistent XLA compilation cache, so that the identical tiny programs
that several tests build (CLI runs, their resumes, subprocess runs) compile once per session, and
the one uninterrupted tiny run that the checkpoint/resume and export/evaluate/plot tests share."""

import atexit
import gc
import os
import shutil
import tempfile

import jax
import pytest

from cli_helpers import LONG, TINY_FLAGS

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


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
    """400 env steps (10 chunks) of tiny CartPole, uninterrupted (once per test process that needs it)."""
    from ezv.train import main

    run_dir = str(tmp_path_factory.mktemp("straight") / "run")
    main(["--env-id", "CartPole-v1", "--run-dir", run_dir, *TINY_FLAGS, *LONG])
    return run_dir
