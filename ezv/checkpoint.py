"""Checkpoints of a whole run: the train-state pytree plus the host-side facts needed to go on.

    RUN_DIR/checkpoints/<step>/state   the TrainState (orbax, every leaf: params, target params,
                                       optimiser, replay with priorities, env state, running
                                       normalisation statistics, rng, counters)
    RUN_DIR/checkpoints/<step>/model   the networks alone ({"params", "batch_stats"}, a leading seed
                                       axis with --num-seeds), for evaluation and export without
                                       reading the replay
    RUN_DIR/checkpoints/<step>/meta    JSON: env steps, updates, offline updates done, the config

`<step>` is the run's progress: env steps during collection, env steps + offline updates after.
orbax writes each checkpoint into a temporary folder and renames it when complete, so a process
killed mid-save leaves a temporary folder that is never picked up (nor deleted: it is the user's
data). Incompatible or unreadable checkpoints raise `CheckpointError` with what differs.

    RUN_DIR/checkpoints/<step>/checksums.json   size and CRC-32 of every file above, written once
                                       the save is complete; a restore checks them first, so a
                                       damaged checkpoint is named file by file before orbax reads it
                                       (orbax, failing halfway through a read, leaves tensorstore
                                       callbacks firing into a closed event loop).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import numpy as np

# orbax reports routine facts (read-only managers, ...) as absl warnings; errors still show.
logging.getLogger("absl").setLevel(logging.ERROR)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def _manager(directory: str, keep: int | None, read_only: bool = False):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        enable_async_checkpointing=False,
        read_only=read_only,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "model": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


class Checkpointer:
    """Saves the run's state every so often and keeps the newest `keep`."""

    def __init__(self, run_dir: str, keep: int):
        self.directory = checkpoint_dir(run_dir)
        self.manager = _manager(self.directory, keep)

    def save(self, step: int, state: Any, model: Any, meta: dict[str, Any]) -> str:
        import orbax.checkpoint as ocp

        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(_fill_empty(state)), model=ocp.args.StandardSave(model),
                                    meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()
        where = os.path.join(self.directory, str(step))
        if jax.process_index() == 0:  # orbax has gathered every process's shards by now
            write_checksums(where)
        return where

    def close(self) -> None:
        self.manager.close()


def available_steps(run_dir: str) -> list[int]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    directory = checkpoint_dir(run_dir)
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name) for name in os.listdir(directory)
        if name.isdigit()
        and all(os.path.isdir(os.path.join(directory, name, item)) for item in ("state", "model", "meta"))
    )


def locate(path: str) -> tuple[str, int]:
    """(run dir, step) for a run directory (its newest checkpoint) or one checkpoint folder."""
    path = os.path.normpath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path!r} does not exist.")
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints" and os.path.basename(path).isdigit():
        run_dir, step = os.path.dirname(parent), int(os.path.basename(path))
        if step not in available_steps(run_dir):
            raise CheckpointError(f"{path!r} is not a complete checkpoint (an interrupted save?); complete ones: "
                                  f"{available_steps(run_dir) or 'none'}.")
        return run_dir, step
    steps = available_steps(path)
    if not steps:
        raise CheckpointError(
            f"no complete checkpoint in {checkpoint_dir(path)!r}"
            + (" (the folder does not exist)." if not os.path.isdir(checkpoint_dir(path)) else ".")
        )
    return path, steps[-1]


def set_aside_after(run_dir: str, step: int) -> list[str]:
    """Move the checkpoints newer than `step` (resuming from an older one makes them another
    future of the run) to RUN_DIR/checkpoints-set-aside/, so new saves can take their steps and
    nothing is deleted. Returns the new paths."""
    moved = []
    for later in [s for s in available_steps(run_dir) if s > step]:
        target_dir = os.path.join(run_dir, "checkpoints-set-aside")
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, f"{later}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(os.path.join(checkpoint_dir(run_dir), str(later)), target)
        moved.append(target)
    return moved


CHECKSUMS = "checksums.json"


def _file_checksums(step_dir: str) -> dict[str, list[int]]:
    import zlib

    sums = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel == CHECKSUMS:
                continue
            crc = 0
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    crc = zlib.crc32(chunk, crc)
            sums[rel] = [os.path.getsize(path), crc]
    return sums


def write_checksums(step_dir: str) -> None:
    """Record every file of a finished checkpoint (atomically: a checkpoint without the file is
    restored unchecked, never wrongly rejected)."""
    import json

    tmp = os.path.join(step_dir, CHECKSUMS + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_file_checksums(step_dir), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, CHECKSUMS))


def verify(run_dir: str, step: int, items: tuple[str, ...] = ("state", "model", "meta")) -> None:
    """Raise CheckpointError naming the files of `items` that differ from what was saved."""
    import json

    step_dir = os.path.join(checkpoint_dir(run_dir), str(step))
    try:
        with open(os.path.join(step_dir, CHECKSUMS)) as f:
            saved = json.load(f)
    except FileNotFoundError:
        return  # saved by a process killed before it recorded them, or by an older ezv
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {step_dir!r}: unreadable {CHECKSUMS} ({e}). Complete checkpoints of this "
                              f"run: {available_steps(run_dir)}; pick another with --resume-step.") from e
    now = _file_checksums(step_dir)
    damaged = []
    for rel, (size, crc) in saved.items():
        if rel.split(os.sep)[0] not in items:
            continue
        if rel not in now:
            damaged.append(f"{rel} is missing")
        elif now[rel][0] != size:
            damaged.append(f"{rel} has {now[rel][0]} bytes, {size} when saved")
        elif now[rel][1] != crc:
            damaged.append(f"{rel} has changed since it was saved")
    if damaged:
        raise CheckpointError(
            f"checkpoint {step_dir!r} is damaged:\n  " + "\n  ".join(damaged[:8])
            + (f"\n  ... and {len(damaged) - 8} more" if len(damaged) > 8 else "")
            + f"\nComplete checkpoints of this run: {available_steps(run_dir)}; pick another with --resume-step. "
            "Nothing was changed in the run directory."
        )


def read_meta(run_dir: str, step: int) -> dict[str, Any]:
    import json

    path = os.path.join(checkpoint_dir(run_dir), str(step), "meta", "metadata")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {os.path.dirname(os.path.dirname(path))!r} has no readable metadata "
                              f"({e}); complete checkpoints: {available_steps(run_dir)}.") from e


def _fill_empty(tree: Any) -> Any:
    """orbax cannot save zero-size arrays (MJX data has some, e.g. `act` of a model without
    actuator state): each is saved as one element and restored to its empty shape."""
    def fill(x):
        if int(np.prod(x.shape)):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,), x.dtype, sharding=_replicated_like(x.sharding))
        return jax.numpy.zeros((1,), x.dtype)

    return jax.tree.map(fill, tree)


def _replicated_like(sharding: Any) -> Any:
    if sharding is None or not hasattr(sharding, "mesh"):
        return sharding
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


def _unfill_empty(restored: Any, abstract_state: Any) -> Any:
    return jax.tree.map(lambda r, a: r if np.prod(a.shape) else jax.numpy.zeros(a.shape, a.dtype), restored,
                        abstract_state)


def restore_state(run_dir: str, step: int, abstract_state: Any) -> Any:
    """The saved state, shaped like `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
    import orbax.checkpoint as ocp

    full_abstract, abstract_state = abstract_state, _fill_empty(abstract_state)
    verify(run_dir, step, ("state",))
    manager = _manager(checkpoint_dir(run_dir), None, read_only=True)
    where = os.path.join(checkpoint_dir(run_dir), str(step))
    saved_shapes = _saved_shapes(manager, step)
    if saved_shapes is not None:
        wanted = _shape_signature(abstract_state)
        diffs = [f"{k}: checkpoint {saved_shapes.get(k)}, now {v}" for k, v in wanted.items()
                 if saved_shapes.get(k) != v]
        diffs += [f"{k}: checkpoint {v}, absent now" for k, v in saved_shapes.items() if k not in wanted]
        if diffs:
            raise CheckpointError(f"checkpoint {where!r} does not fit this program's state:\n  "
                                  + "\n  ".join(diffs[:12]))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # orbax/tensorstore raise many types for truncated or missing files
        raise CheckpointError(
            f"checkpoint {where!r} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
            f"Complete checkpoints of this run: {available_steps(run_dir)}; pick another with --resume-step. "
            "Nothing was changed in the run directory."
        ) from e
    finally:
        manager.close()
    return _unfill_empty(restored["state"], full_abstract)


def restore_model(run_dir: str, step: int) -> dict[str, Any]:
    """{"params", "batch_stats"} of a checkpoint as numpy arrays (leading seed axis with several seeds)."""
    import orbax.checkpoint as ocp

    verify(run_dir, step, ("model",))
    manager = _manager(checkpoint_dir(run_dir), None, read_only=True)
    where = os.path.join(checkpoint_dir(run_dir), str(step))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(
            _on_this_device(manager, step))))
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for damaged files
        first_line = str(e).splitlines()[0][:300]
        raise CheckpointError(f"the networks of checkpoint {where!r} could not be read ({type(e).__name__}: "
                              f"{first_line}); complete checkpoints: {available_steps(run_dir)}.") from e
    finally:
        manager.close()
    return jax.tree.map(np.asarray, restored["model"])


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _saved_tree(manager, step: int, item: str) -> Any:
    """The saved item's tree of array metadata (shapes, dtypes), or None if the checkpoint's metadata cannot
    say (then the restore itself reports the problem)."""
    try:
        meta = manager.item_metadata(step)[item]
    except Exception:  # noqa: BLE001
        return None
    return None if meta is None else getattr(meta, "tree", meta)


def _on_this_device(manager, step: int) -> Any:
    """The saved networks' shapes, placed on this process's first device: a multi-process run saves them
    replicated over its whole mesh, whose other processes' devices a later reader does not have (None if the
    metadata cannot say: orbax then restores as saved)."""
    tree = _saved_tree(manager, step, "model")
    if tree is None:
        return None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype, sharding=device), tree,
                        is_leaf=_is_array)


def _path_name(path: tuple) -> str:
    """A leaf's path as 'a/b/0', the same for a dataclass field, a dict key and a list index
    (orbax's metadata tree holds dicts where the state has dataclasses)."""
    parts = []
    for entry in path:
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _shape_signature(tree: Any) -> dict[str, str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): f"{tuple(x.shape)} {np.dtype(x.dtype).name}" for path, x in leaves}


def _saved_shapes(manager, step: int) -> dict[str, str] | None:
    """Shapes and dtypes of the saved state's leaves, keyed like `_shape_signature`, or None if
    the checkpoint's metadata cannot say."""
    tree = _saved_tree(manager, step, "state")
    if tree is None:
        return None
    try:
        leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_array)[0]
        return {_path_name(path): f"{tuple(x.shape)} {np.dtype(x.dtype).name}" for path, x in leaves}
    except Exception:  # noqa: BLE001
        return None


def abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)), tree
    )
