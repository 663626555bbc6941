"""Test-session set-up: one persistent XLA compilation cache, so that the identical tiny programs
that several tests build (CLI runs, their resumes, subprocess runs) compile once per session."""

import os
import tempfile

import jax

CACHE_DIR = os.environ.setdefault("EZV_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="ezv-test-xla-cache-"))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
