"""The persistent XLA compilation cache of ezv's commands.

A training run compiles one program per config (the chunk, the evaluation, the offline block);
compiling them is most of a small run's wall-clock on a CPU (CartPole: ~25 s of ~60 s), and the same
config compiles to the same programs every time. `ezv.train` and `ezv.evaluate` therefore keep
compiled programs on disk, keyed by XLA on the program, the device and the jax version, so a run
whose config was compiled before on this machine skips the compilation (CartPole on 2 cores: ~16 s).

Where: `$EZV_COMPILATION_CACHE` if set (`off` disables it), else a cache jax was already told about
(`JAX_COMPILATION_CACHE_DIR`), else `$XDG_CACHE_HOME/ezv/xla` (`~/.cache/ezv/xla`). Where the
`filelock` package is installed (jax needs it to bound the cache) the cache keeps at most 2 GiB, least
recently used entries going first; otherwise it grows, a few MB per config (delete the directory to
clear it).
"""

from __future__ import annotations

import importlib.util
import os

import jax

OFF = ("0", "off", "false", "no", "none")
MAX_BYTES = 2 * 2**30


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ezv", "xla")


def enable() -> str | None:
    """Turn the cache on for this process (before anything compiles); returns its directory, or None
    when it is off or its directory cannot be created (the run then compiles as usual)."""
    setting = os.environ.get("EZV_COMPILATION_CACHE", "").strip()
    if setting and setting.lower() in OFF:
        return None
    if not setting and jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = os.path.expanduser(setting or default_dir())
    if path.startswith("~"):  # no home directory to expand
        return None
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):  # jax would warn at every compile
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_compilation_cache_max_size == -1 and importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
