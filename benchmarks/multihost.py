"""Several processes against one: the same run over 2 devices as 1 process x 2 devices and as 2 processes x 1
device (`jax.distributed` over 127.0.0.1, gloo collectives on CPU), beside 1 process x 1 device.

    python -m benchmarks multihost [--env-id CartPole-v1] [--iterations 50] [--chunks 4] [--quick] [--json F]
    python -m benchmarks multihost --bytes-only   # the Atari preset's all-reduce size and the projection

Each layout is its own process(es) running the program `ezv.train` compiles for `--devices D`, timed in steady
state after the replay can be sampled (the loop benchmark's config). Then the one collective of an update (the
mean of the flat gradient and normalisation statistics, `ezv.learner`) is timed alone at the network's size.
The table: env steps/s, updates/s, the all-reduce's time and its share of an update's time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name: (processes, devices per process)


def _worker(out: str, env_id: str, iterations: int, chunks: int, devices: int) -> None:
    import jax
    import jax.flatten_util

    from benchmarks.common import machine
    from benchmarks.loop import bench_config
    from ezv import distributed
    from ezv.program import AXIS, Program

    cfg = dataclasses.replace(bench_config(env_id, iterations, []), devices=devices)
    program = Program(cfg)
    state = program.init()
    program.compile(state)
    while program.updates(state) == 0:
        state, _ = program.chunk(state)
    state, _ = program.chunk(state)  # the first chunk that learns throughout
    jax.block_until_ready(state)
    updates0, steps0, start = program.updates(state), program.env_steps(state), time.perf_counter()
    for _ in range(chunks):
        state, _ = program.chunk(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    ts = program.train_states(state)
    one_replica = jax.tree.map(distributed.local_replica, (ts.params, ts.batch_stats)) if devices > 1 else (
        ts.params, ts.batch_stats)
    floats = int(jax.flatten_util.ravel_pytree(one_replica)[0].size)
    row = dict(env_id=env_id, processes=jax.process_count(), devices=devices, floats=floats,
               env_steps_per_s=(program.env_steps(state) - steps0) / seconds,
               updates_per_s=(program.updates(state) - updates0) / seconds, machine=machine())
    if devices > 1:
        row["allreduce_ms"] = 1e3 * _time_allreduce(program.mesh, floats, AXIS)
        row["allreduce_share"] = row["allreduce_ms"] / 1e3 * row["updates_per_s"]
    if distributed.is_writer():
        with open(out, "w") as f:
            json.dump(row, f)


def _time_allreduce(mesh, floats: int, axis: str, repeats: int = 50) -> float:
    """Median seconds of the update's one all-reduce (a pmean of `floats` float32) over the mesh."""
    import statistics

    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    def shard(fn, in_specs):
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(axis), check_vma=False))

    make = shard(lambda k: jnp.ones((1, floats), jnp.float32) * k, P())
    allreduce = shard(lambda x: jax.lax.pmean(x, axis), P(axis))
    x = jax.block_until_ready(allreduce(make(jnp.float32(1.0))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x = jax.block_until_ready(allreduce(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(name: str, env_id: str, iterations: int, chunks: int, timeout: int = 1800) -> dict:
    processes, per = LAYOUTS[name]
    out = os.path.join(tempfile.mkdtemp(prefix="ezv-multihost-"), "row.json")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={per}")
    base = [sys.executable, "-m", "benchmarks", "multihost", "--worker", out, "--env-id", env_id,
            "--iterations", str(iterations), "--chunks", str(chunks), "--devices", str(processes * per)]
    port = _free_port()
    commands = [base if processes == 1 else
                [*base, "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(processes),
                 "--process-id", str(i)] for i in range(processes)]
    started = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    try:
        for p in started:
            _, err = p.communicate(timeout=timeout)
            if p.returncode:
                raise RuntimeError(f"layout {name} failed:\n{err[-3000:]}")
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
    with open(out) as f:
        return dict(json.load(f), layout=f"{processes} process(es) x {per} device(s)")


def atari_projection() -> dict:
    """The Atari preset's all-reduce per update and what a ring all-reduce of it costs at 8 and 64 GPUs."""
    import jax
    import numpy as np

    from ezv.config import load_preset
    from ezv.envs.core import Discrete, EnvSpec
    from ezv.model import EZModel

    cfg = load_preset("atari")
    spec = EnvSpec(env_id="Breakout-v5", backend="envpool", domain="atari", obs_shape=(96, 96, 3),
                   obs_dtype=np.dtype("uint8"), action_space=Discrete(n=18), max_episode_steps=27_000, frame_stack=4)
    model = EZModel(cfg, spec)
    variables = jax.eval_shape(model.init_variables, jax.random.PRNGKey(0))
    floats = int(sum(x.size for x in jax.tree.leaves(variables)))
    mb = floats * 4 / 1e6
    rows = []
    # Ring all-reduce: each GPU sends and receives 2 (D - 1) / D of the buffer. NVLink 4 (H100 SXM): ~450 GB/s per
    # direction in a node; between nodes one 400 Gb/s NIC per GPU (~50 GB/s); 64 GPUs = 8 nodes.
    for gpus, gb_s, link in ((8, 450.0, "NVLink, one node"), (64, 50.0, "400 Gb/s per GPU, 8 nodes")):
        seconds = 2 * (gpus - 1) / gpus * floats * 4 / (gb_s * 1e9)
        rows.append(dict(gpus=gpus, link=link, allreduce_ms=1e3 * seconds))
    return dict(floats=floats, megabytes=mb, projection=rows)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks multihost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--iterations", type=int, default=50, help="acting iterations per chunk")
    parser.add_argument("--chunks", type=int, default=4, help="chunks timed per layout")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bytes-only", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        from ezv import distributed

        launch, _ = distributed.parse_launch(rest)
        distributed.initialize(launch)
        _worker(args.worker, args.env_id, args.iterations, args.chunks, args.devices)
        return
    from benchmarks.common import print_table, save_json

    projection = atari_projection()
    print(f"Atari preset: {projection['floats']:,} float32 per all-reduce ({projection['megabytes']:.1f} MB)")
    print_table("projected ring all-reduce per update (bandwidth only)", projection["projection"],
                ["gpus", "link", "allreduce_ms"])
    rows = []
    if not args.bytes_only:
        iterations, chunks = (10, 2) if args.quick else (args.iterations, args.chunks)
        for name in args.layouts:
            rows.append(run_layout(name, args.env_id, iterations, chunks))
            print(f"{name}: {rows[-1]['updates_per_s']:.1f} updates/s", flush=True)
        print_table(f"{args.env_id}: one run over the layouts", rows,
                    ["layout", "env_steps_per_s", "updates_per_s", "floats", "allreduce_ms", "allreduce_share"])
    if args.json:
        save_json(args.json, "multihost", [*rows, dict(atari=projection)])
