"""Several processes (one per host) training one run on JAX's own distributed runtime.

Every process runs the same command. `jax.distributed.initialize` joins them (found automatically on
SLURM, Open MPI, Kubernetes and Cloud TPU; given with flags or environment variables elsewhere), after
which `jax.devices()` lists every process's devices and the run's mesh spans them: each process steps
the envs of its own devices into their own replay shards, and the gradient's mean is taken across all
devices, so every process holds the same networks. Process 0 is the run's one writer (config, metrics,
TensorBoard, progress, evaluations, best agents); checkpoints are written by every process for its own
shards through orbax, into the run directory, which must be on a filesystem that all processes share.

    launch, argv = parse_launch(argv)   # --coordinator-address, --num-processes, --process-id, ...
    initialize(launch)                  # before anything touches a JAX device

A process that dies is noticed by the others at their next collective (the connection drops: they stop
with `PeerFailure`) or by the coordinator's heartbeat check after `--heartbeat-timeout` seconds (JAX then
ends the surviving processes itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np


class LaunchError(RuntimeError):
    """Flags or environment variables that cannot start the distributed runtime; the message says why."""


class PeerFailure(RuntimeError):
    """Another process of the run stopped (or its connection broke) in the middle of the run."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins the others: not part of the run's config (it differs between processes
    and between launches of the same run)."""

    coordinator_address: str | None = None  # host:port of process 0, reachable from every process
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False  # --distributed: let JAX find the cluster (SLURM, Open MPI, Kubernetes, TPU)
    heartbeat_timeout_s: int = 100
    initialization_timeout_s: int = 300

    @property
    def requested(self) -> bool:
        return self.auto or any(v is not None for v in (self.coordinator_address, self.num_processes,
                                                        self.process_id))


LAUNCH_HELP = """several processes (see README "Several hosts"):
  --distributed                 join the other processes of a SLURM / Open MPI / Kubernetes / TPU job
  --coordinator-address H:P     process 0's address (env JAX_COORDINATOR_ADDRESS)
  --num-processes N             (env JAX_NUM_PROCESSES)
  --process-id I                0 .. N-1 (env JAX_PROCESS_ID)
  --heartbeat-timeout S         a silent process counts as dead after S seconds (100)
  --initialization-timeout S    how long to wait for every process to join (300)"""


def parse_launch(argv: Sequence[str], environ: dict[str, str] | None = None) -> tuple[Launch, list[str]]:
    """The launch flags (with the JAX_* environment variables as their defaults) and the other flags."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--coordinator-address", "--coordinator_address", default=env.get("JAX_COORDINATOR_ADDRESS"))
    parser.add_argument("--num-processes", "--num_processes", default=env.get("JAX_NUM_PROCESSES"))
    parser.add_argument("--process-id", "--process_id", default=env.get("JAX_PROCESS_ID"))
    parser.add_argument("--heartbeat-timeout", "--heartbeat_timeout", default="100")
    parser.add_argument("--initialization-timeout", "--initialization_timeout", default="300")
    known, rest = parser.parse_known_args(list(argv))

    def integer(name: str, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise LaunchError(f"--{name} must be an integer (got {value!r}).") from None

    launch = Launch(coordinator_address=known.coordinator_address,
                    num_processes=integer("num-processes", known.num_processes),
                    process_id=integer("process-id", known.process_id), auto=known.distributed,
                    heartbeat_timeout_s=integer("heartbeat-timeout", known.heartbeat_timeout),
                    initialization_timeout_s=integer("initialization-timeout", known.initialization_timeout))
    return launch, rest


def launch_errors(launch: Launch) -> list[str]:
    errors = []
    explicit = [launch.coordinator_address, launch.num_processes, launch.process_id]
    if not launch.auto and any(v is not None for v in explicit) and any(v is None for v in explicit):
        errors.append("without --distributed (a cluster JAX detects), give all three of --coordinator-address, "
                      "--num-processes and --process-id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                      "JAX_PROCESS_ID).")
    if launch.num_processes is not None and launch.num_processes < 1:
        errors.append(f"--num-processes must be >= 1 (got {launch.num_processes}).")
    if launch.process_id is not None and launch.num_processes is not None and not (
            0 <= launch.process_id < launch.num_processes):
        errors.append(f"--process-id must be in 0..{launch.num_processes - 1} (got {launch.process_id}).")
    if launch.coordinator_address is not None and ":" not in launch.coordinator_address:
        errors.append(f"--coordinator-address is host:port (got {launch.coordinator_address!r}).")
    if launch.heartbeat_timeout_s < 1 or launch.initialization_timeout_s < 1:
        errors.append("--heartbeat-timeout and --initialization-timeout are seconds, >= 1.")
    return errors


def initialize(launch: Launch) -> None:
    """Join the run's other processes (nothing to do for a single process, or if the caller already did)."""
    import jax

    if not launch.requested or jax.distributed.is_initialized():
        return
    errors = launch_errors(launch)
    if errors:
        raise LaunchError("\n".join(errors))
    try:
        jax.distributed.initialize(launch.coordinator_address, launch.num_processes, launch.process_id,
                                   initialization_timeout=launch.initialization_timeout_s,
                                   heartbeat_timeout_seconds=launch.heartbeat_timeout_s)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if launch.auto and launch.coordinator_address is None:
            raise LaunchError(f"--distributed found no cluster JAX knows (SLURM, Open MPI, Kubernetes, Cloud TPU): "
                              f"{first}. Elsewhere give --coordinator-address, --num-processes and --process-id "
                              "instead.") from e
        raise LaunchError(
            f"could not join the run's other processes ({first}). Every process must be started with the same "
            f"--coordinator-address and --num-processes and its own --process-id, within "
            f"--initialization-timeout ({launch.initialization_timeout_s} s) of each other, and process 0's "
            "address must be reachable from every host.") from e


# --- who does what ------------------------------------------------------------------------------


def process_count() -> int:
    import jax

    return jax.process_count()


def is_multiprocess() -> bool:
    """Whether this process is one of several (without starting JAX's backend when it is not)."""
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_writer() -> bool:
    """Process 0 writes the run's files (other than its checkpoint shards) and evaluates."""
    import jax

    return jax.process_index() == 0


def mesh_devices(total: int) -> list[Any]:
    """The run's `total` devices, process by process, each process's first total / processes local devices
    (on one process, `jax.devices()[:total]`)."""
    import jax

    processes = jax.process_count()
    if processes == 1:
        return jax.devices()[:total]
    per = total // processes
    by_process = [sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)[:per]
                  for p in range(processes)]
    return [d for devices in by_process for d in devices]


def layout_errors(total_devices: int) -> list[str]:
    """What a run over `total_devices` devices needs of the processes and their local devices."""
    import jax

    processes, local = jax.process_count(), jax.local_device_count()
    if processes == 1:
        if total_devices > local:
            return [f"--devices {total_devices} but this machine has {local} local {jax.default_backend()} "
                    f"device(s); use --devices {local} or fewer."]
        return []
    if total_devices % processes:
        return [f"--devices counts the run's devices across its {processes} processes and must be a multiple of "
                f"{processes} (got {total_devices}); e.g. --devices {processes * local} uses every process's "
                f"{local} local device(s)."]
    if total_devices // processes > local:
        return [f"--devices {total_devices} over {processes} processes needs {total_devices // processes} local "
                f"devices per process; this one has {local}. Use --devices {processes * local} or fewer."]
    return []


# --- values every process agrees on -------------------------------------------------------------


def agree(make: Callable[[], Any], name: str, *errors: type[Exception]) -> Any:
    """`make()` run by process 0 alone, its JSON-able result (or the error it raised) given to every
    process: one process creates the run directory, and all of them use (or refuse) the same one. An error
    of a type in `errors` (or FileExistsError, ValueError) is raised as that type everywhere."""
    if process_count() == 1:
        return make()
    from jax.experimental import multihost_utils

    if is_writer():
        try:
            message = {"value": make()}
        except Exception as e:  # noqa: BLE001 - every process must learn that process 0 failed
            message = {"error": type(e).__name__, "message": str(e)}
        payload = json.dumps(message).encode()
    else:
        payload = b""
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(payload))))
    buffer = np.zeros(size, np.uint8)
    buffer[:len(payload)] = np.frombuffer(payload, np.uint8)
    message = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())
    if "error" in message:
        known = {e.__name__: e for e in (FileExistsError, ValueError, *errors)}
        error = known.get(message["error"], RuntimeError)
        raise error(message["message"] + (f" (process 0, while {name})" if not is_writer() else ""))
    return message["value"]


def barrier(name: str) -> None:
    """Every process waits here until all have come (after process 0 has moved files the others read)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather(tree: Any) -> Any:
    """A pytree of the run's arrays as numpy, whole on every process (their [devices, ...] axis complete)."""
    import jax

    if process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def local_replica(x: Any) -> Any:
    """One device's slice of a [devices, ...] array whose devices hold the same values (the networks), taken
    from this process's own devices: device 0's on a single process, the process's first device's otherwise."""
    if process_count() == 1 or getattr(x, "is_fully_addressable", True):
        return x[0]
    return x.addressable_shards[0].data[0]


def first_value(x: Any) -> int:
    """The first element of an array every device agrees on (a counter), read from a local device."""
    import jax

    if not getattr(x, "is_fully_addressable", True):
        x = x.addressable_shards[0].data
    return int(np.asarray(jax.device_get(x)).reshape(-1)[0])


# --- a broken run ---------------------------------------------------------------------------------

_PEER_SIGNS = ("gloo", "nccl", "connection reset", "connection closed", "coordination service", "heartbeat",
               "unavailable:", "deadline_exceeded", "barrier")


def leave(code: int) -> None:
    """Exit with `code`. A process of a multi-process run leaves at once (flushing its output): a normal exit
    would wait at JAX's shutdown barrier for processes that are stuck in a collective with it, then abort."""
    import sys

    if is_multiprocess():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def peer_failure(error: BaseException, env_steps: int, run_dir: str, last_saved: int | None) -> PeerFailure:
    """What a process says when a collective broke under it: where the run stands and how to go on."""
    kept = (f"its newest checkpoint is {last_saved}; resume it with the same command and --resume {run_dir} on every "
            "process" if last_saved is not None else "no checkpoint was written yet: start it again with another "
            "--run-dir")
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return PeerFailure(f"another process of this run stopped or lost its connection at {env_steps} env steps "
                       f"({type(error).__name__}: {first}; the whole error is above: if it names no peer, the cause "
                       f"may be this process's own); this process stops too; {kept}.")


def count_changed(step: int, was: int, devices: int) -> str:
    return (f"checkpoint {step} was saved by {was} process(es) and is restored by {process_count()}: the run keeps "
            f"its {devices} device(s), each with its own envs and replay, so it goes on exactly as it would have.")


def is_peer_failure(error: BaseException) -> bool:
    """Whether an error raised in a collective means another process has gone (only in a multi-process run)."""
    if process_count() == 1:
        return False
    text = str(error).lower()
    return any(sign in text for sign in _PEER_SIGNS)
