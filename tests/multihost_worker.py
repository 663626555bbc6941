"""One process of a multi-process test run: `python multihost_worker.py OUT.json TRAIN_FLAGS...` trains with
`ezv.train`'s flags (launch flags included) and writes, for each of this process's devices, a digest of the
networks it holds, so that a test can compare them across processes and with a single-process run."""

from __future__ import annotations

import hashlib
import json
import sys

import jax
import numpy as np

from ezv import compile_cache, distributed
from ezv.run import Run
from ezv.train import resolve_config


def device_digests(tree) -> dict[str, str]:
    """{device id within the mesh order: sha256 of every leaf's slice on that device}."""
    hashes: dict[int, hashlib._Hash] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            index = shard.index[0].start or 0  # the [devices, ...] axis: this shard's place in the mesh
            hashes.setdefault(index, hashlib.sha256()).update(np.asarray(shard.data).tobytes())
    return {str(i): h.hexdigest() for i, h in sorted(hashes.items())}


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    compile_cache.enable()
    launch, argv = distributed.parse_launch(argv)
    distributed.initialize(launch)
    run = Run(resolve_config(argv))
    run.execute()
    with open(out, "w") as f:
        params = run.program.train_states(run.state).params
        json.dump({"process": jax.process_index(), "digests": device_digests(params)}, f)


if __name__ == "__main__":
    main()
