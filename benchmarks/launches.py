"""What a GPU would launch, counted on any device: kernels and host round-trips per loop stage.

    python -m benchmarks launches [--presets classic atari ...] [--batch 32] [--json out.json]

Why this proxy. On the H200 the loop is launch-bound (RESULTS.md: 7,417 kernels for one act + one
reanalysis search + one gradient step, the GPU idle half the time), so what predicts GPU time is
how many kernels run and how often the host must wait for the device, not FLOPs. Both can be
counted without a GPU: XLA:CPU executes a compiled program as a sequence of thunks (one per fusion,
dot, convolution, copy, sort, custom call, ...) and its profiler records every thunk it runs, loop
iterations included. Each stage is compiled as its own program and run once under the profiler:

- `kernels`: thunks executed, control flow (while/conditional/call) excluded. XLA:GPU fuses
  differently, so this is not the GPU's kernel count, but both follow the same HLO: the same
  loops run the same number of times and call the same networks, so a change that removes
  launches on one removes them on the other.
- `syncs`: evaluations of the condition of a loop whose trip count XLA does not know (mctx's tree
  traversal and backup, the evaluation episode loop). On a GPU each is a kernel, a device-to-host
  copy of the predicate and a wait before the next iteration can be launched: these serialise the
  host with the device and are what CUDA graphs (command buffers) cannot capture in jax's default
  settings. Loops with a known trip count (`fori_loop`, `scan`) need no predicate on the host.

Counts do not depend on the device; they depend weakly on the batch through the data-dependent
loops (a traversal loop runs until the deepest of the batch's simulations is done), so each preset
is counted with its own networks and search at `--batch` (default 32) instead of its full batch,
which keeps the Atari count affordable on a CPU; the loop trip counts use a fresh network.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import re
import shutil
import tempfile
from typing import Any, Callable

import jax

from benchmarks.common import PRESET_ENVS, print_table, save_json
from benchmarks.loop import sample_group
from ezv.program import Program
from ezv.train import resolve_config

CONTROL_FLOW = {"while", "conditional", "call"}
NOT_THUNKS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_WHILE = re.compile(r"\bwhile\(.*condition=%([\w.\-]+), body=%([\w.\-]+)")


@dataclasses.dataclass(frozen=True)
class HloIndex:
    """What the count needs from a compiled module's text: the opcode of every instruction and, for
    each condition of a loop with an unknown trip count, one instruction that runs once per evaluation
    of it (its first that is a thunk)."""

    module: str
    opcodes: dict[str, str]
    sync_instructions: frozenset[str]

    @classmethod
    def of(cls, hlo_text: str) -> HloIndex:
        module = hlo_text.split(None, 2)[1].rstrip(",")
        opcodes: dict[str, str] = {}
        members: dict[str, list[str]] = collections.defaultdict(list)
        unknown_trip_conditions: set[str] = set()
        computation = None
        for line in hlo_text.splitlines():
            header = _COMPUTATION.match(line)
            if header:
                computation = header.group(1)
                continue
            instruction = _INSTRUCTION.match(line)
            if instruction and computation is not None:
                name, opcode = instruction.groups()
                opcodes[name] = opcode
                members[computation].append(name)
                loop = _WHILE.search(line)
                if loop and "known_trip_count" not in line:
                    unknown_trip_conditions.add(loop.group(1))
        if not opcodes:
            raise RuntimeError("no instruction found in the compiled HLO text: its format changed, update HloIndex")
        syncs = frozenset(next(n for n in members[c] if opcodes[n] not in NOT_THUNKS)
                          for c in unknown_trip_conditions if any(opcodes[n] not in NOT_THUNKS for n in members[c]))
        return cls(module, opcodes, syncs)


def count_launches(fn: Callable, *args) -> dict[str, int]:
    """Kernels, host syncs and loop entries of one call of `jax.jit(fn)(*args)` (compiled before)."""
    compiled = jax.jit(fn).lower(*args).compile()  # one compile: the text and the runs are of the same program
    index = HloIndex.of(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    trace_dir = tempfile.mkdtemp(prefix="ezv-launches-")
    try:
        with jax.profiler.trace(trace_dir):
            jax.block_until_ready(compiled(*args))
        events = []
        for path in glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True):
            with gzip.open(path) as f:
                events += json.load(f)["traceEvents"]
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    counts = collections.Counter()
    for event in events:
        event_args = event.get("args") or {}
        op = event_args.get("hlo_op")
        if event.get("ph") != "X" or op is None or event_args.get("hlo_module") != index.module:
            continue
        opcode = index.opcodes.get(op, "fusion")
        if opcode in CONTROL_FLOW:
            counts["loops" if opcode == "while" else "calls"] += 1
        else:
            counts["kernels"] += 1
        if op in index.sync_instructions:
            counts["syncs"] += 1
    if not counts["kernels"]:
        raise RuntimeError("the profiler recorded no thunk of the program: this jax's CPU runtime does not "
                           "trace thunks, so the launch proxy cannot be counted here")
    return {"kernels": counts["kernels"], "syncs": counts["syncs"], "loops": counts["loops"]}


def program_for(preset: str, batch: int, flags: list[str]) -> Program:
    """The preset's program on its env with a `batch`-sized learner batch and a replay just large
    enough to sample from (the counts do not depend on the replay's size)."""
    cfg = resolve_config(["--env-id", PRESET_ENVS[preset], "--preset", preset, *flags])
    window = cfg.learner.unroll_steps + cfg.learner.td_steps + 1
    cfg = dataclasses.replace(
        cfg,
        learner=dataclasses.replace(cfg.learner, batch_size=batch),
        replay=dataclasses.replace(cfg.replay, capacity=max(64 * cfg.num_envs, 4 * window * cfg.num_envs)),
        learning_starts=2 * window * cfg.num_envs,
        total_env_steps=10 ** 6,
        eval_episodes=min(cfg.eval_episodes, 4),
    )
    return Program(cfg)


def measure(preset: str, batch: int, flags: list[str] = ()) -> dict[str, Any]:
    program = program_for(preset, batch, list(flags))
    agent, cfg = program.agent, program.cfg
    state = program.init()
    act = jax.jit(agent.act)
    while int(program.env_steps(state)) < cfg.learning_starts + cfg.num_envs:
        state, _ = act(state)
    count = cfg.updates_per_iteration
    key = jax.random.PRNGKey(1)
    _, weights, _, flat = jax.jit(lambda replay, key: sample_group(agent, replay, key))(state.replay, key)
    values, out = jax.jit(agent.learner.reanalysis_search)(state, flat, key)
    targets, _ = jax.jit(agent.learner.build_targets)(state, flat, values, out)
    first = lambda tree: jax.tree.map(lambda x: x[:batch], tree)  # noqa: E731
    model = agent.model
    obs = jax.numpy.zeros((cfg.eval_episodes,) + model.stacked_obs_shape, model.spec.obs_dtype)
    stages = {
        "act (one iteration)": count_launches(agent.act, state),
        "reanalysis search (one group)": count_launches(agent.learner.reanalysis_search, state, flat, key),
        "targets (one group)": count_launches(agent.learner.build_targets, state, flat, values, out),
        "gradient step": count_launches(agent.learner.gradient_step, state, first(flat), first(targets),
                                        weights[0], key),
        "evaluation step": count_launches(model.greedy_action, state.variables, obs, key),
    }
    per_update = {k: stages["reanalysis search (one group)"][k] / count + stages["targets (one group)"][k] / count
                  + stages["gradient step"][k] for k in ("kernels", "syncs")}
    return dict(preset=preset, env_id=cfg.env_id, batch=batch, simulations=model.num_simulations,
                updates_per_iteration=count, stages=stages, per_update=per_update,
                per_iteration={k: stages["act (one iteration)"][k] + count / cfg.learn_every * per_update[k]
                               for k in ("kernels", "syncs")})


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [dict(preset=result["preset"], stage=name, **c) for name, c in result["stages"].items()]
    preset = result["preset"]
    rows.append(dict(preset=preset, stage="= per update (search + targets + gradient)", **result["per_update"]))
    rows.append(dict(preset=preset, stage="= per loop iteration (act + its updates)", **result["per_iteration"]))
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks launches", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["classic", "control", "atari", "dmc_state"])
    parser.add_argument("--batch", type=int, default=32, help="learner batch of the count (not the preset's)")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args(argv)
    results = [measure(preset, args.batch, extra) for preset in args.presets]
    rows = [row for result in results for row in rows_of(result)]
    print_table(f"Launch proxy (kernels executed, host syncs of data-dependent loops; learner batch {args.batch})",
                rows, ["preset", "stage", "kernels", "syncs", "loops"])
    save_json(args.json, "launches", results)
    return results


if __name__ == "__main__":
    main()
