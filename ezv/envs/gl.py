"""OpenGL for envpool's MuJoCo renderer: what pixel DMC needs before its first frame.

Facts that shape this module (envpool 1.2.5, checked on a 2-core CPU machine with Mesa 22.3):
- envpool's wheel links its own glvnd (`envpool.libs/libEGL-*.so`, `libOpenGL-*`, `libGLdispatch-*`)
  privately. MuJoCo's context code looks `eglGetProcAddress` up in the process's global namespace,
  does not find it there, and `reset` kills the process ("an OpenGL platform library has not been
  loaded into this process"), whatever `MUJOCO_GL` says. Loading those same libraries with
  RTLD_GLOBAL first fixes it: glvnd then picks the machine's EGL vendor (Mesa's software `swrast`
  on a CPU machine, NVIDIA's on a GPU machine) and frames render.
- A machine with no EGL vendor at all still aborts inside `reset`, taking the process (and a run's
  unsaved state) with it, and so does a camera the task does not have. So each (task, camera) of a
  process is first tried in a child process, and a failure becomes a one-line error (naming what to
  install when OpenGL failed), before anything compiles.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import subprocess
import sys

INSTALL_HINT = (
    "DMC from pixels renders with MuJoCo through EGL. On a CPU machine install Mesa's software EGL "
    "(Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri); on an NVIDIA GPU machine the "
    "driver's EGL (libnvidia-egl, part of the full driver install) is used."
)
# The task and camera to be used, at a frame size small enough that the probe costs about a second.
_PROBE = (
    "import sys, ezv.envs.gl as g; g.load_envpool_gl(); import envpool, numpy as np; "
    "p = envpool.make(sys.argv[1], env_type='gymnasium', num_envs=1, num_threads=1, from_pixels=True, "
    "render_width=16, render_height=16, render_camera_id=int(sys.argv[2])); o, _ = p.reset(); "
    "assert o.shape == (1, 3, 16, 16) and o.dtype == np.uint8, o.shape"
)
GL_FAILURES = ("OpenGL", "EGL", "mjr_makeContext", "gladLoad", "OSMesa")


class RenderingUnavailable(RuntimeError):
    """No OpenGL platform MuJoCo can render with in this process."""


@functools.cache
def load_envpool_gl() -> None:
    """Put envpool's bundled glvnd libraries in the global namespace (see the module's notes)."""
    import envpool

    libs = os.path.join(os.path.dirname(os.path.abspath(envpool.__file__)), os.pardir, "envpool.libs")
    for name in ("libGLdispatch", "libOpenGL", "libEGL"):  # dependencies first
        found = sorted(glob.glob(os.path.join(libs, f"{name}-*.so*")))
        if found:
            ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)


@functools.cache
def _probe(task: str, camera: int) -> str | None:
    """None when `task` renders from `camera` in a child process; else what the child reported."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, task, str(camera)], capture_output=True, text=True,
                              timeout=300, close_fds=False)  # posix_spawn, not fork (JAX warns at forks)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def ensure_rendering(task: str, camera: int) -> None:
    """Make envpool's pixel `task` render from `camera` in this process. Raises RenderingUnavailable (saying
    what to install when OpenGL is what failed) or ValueError for a camera the task does not have."""
    failure = _probe(task, camera)
    if failure is None:
        load_envpool_gl()
        return
    if "camera_id is out of range" in failure:
        raise ValueError(f"option camera_id={camera}: {task} has no such camera (envpool: {failure}).")
    if any(word in failure for word in GL_FAILURES):
        raise RenderingUnavailable(f"{INSTALL_HINT} MuJoCo reported: {failure}")
    raise RenderingUnavailable(f"{task} could not render a frame in a child process: {failure}")
