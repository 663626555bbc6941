"""FLOP counts of the training loop's parts, from XLA's cost analysis of loop-free functions.

XLA counts a while loop's body once, so the search (a loop over simulations) is counted as
its parts: root inference on the batch plus `num_simulations` recurrent-function calls (one
dynamics + prediction step each). Tree bookkeeping (gathers, scatters, the Q transform) has
few FLOPs and is left out: it costs time, not arithmetic, which is what the ceiling shows.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ezv.agent import CompiledAgent
from ezv.model import EZModel


def cost_flops(fn: Callable, *args) -> float:
    """FLOPs of one call of `fn(*args)` as XLA's cost analysis counts them after compiling."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))


def model_flops(model: EZModel, variables: Any, batch: int) -> dict[str, float]:
    """{"root": representation + prediction on `batch` observations (with the root's candidate
    sampling for continuous actions), "recurrent": one recurrent_fn call (dynamics + reward +
    prediction) on `batch` nodes}."""
    key = jax.random.PRNGKey(0)
    obs = jnp.zeros((batch,) + model.stacked_obs_shape, model.spec.obs_dtype)
    root_fn = lambda v, o, k: model.fns.root(v, o, k, widen=True)  # noqa: E731
    root = jax.jit(root_fn)(variables, obs, key)
    slots = jnp.zeros((batch,), jnp.int32)
    return {
        "root": cost_flops(root_fn, variables, obs, key),
        "recurrent": cost_flops(model.fns.recurrent_fn, variables, key, slots, root.embedding),
    }


def loop_flops(agent: CompiledAgent, state: Any) -> dict[str, float]:
    """FLOPs of one acting iteration and of one learner update (reanalysis + gradient step).

    `state` must hold enough replay rows to sample a batch (the loop benchmark's state).
    """
    cfg, L = agent.cfg, agent.cfg.learner
    model, learner = agent.model, agent.learner
    sims = model.num_simulations
    act = model_flops(model, state.variables, agent.envs_per_state)
    positions = L.batch_size * learner.window
    roots = L.batch_size * (L.unroll_steps + 1)
    encode = model_flops(model, state.variables, positions)["root"]
    search = model_flops(model, state.variables, roots)["recurrent"] * sims
    key = jax.random.PRNGKey(0)
    idx, weights, window = jax.jit(learner.sample_batch)(state.replay, key)
    values, out = jax.jit(learner.reanalysis_search)(state, window, key)
    targets, _ = jax.jit(learner.build_targets)(state, window, values, out)
    gradient = cost_flops(learner.gradient_step, state, window, targets, weights, key)
    update = encode + search + gradient
    return dict(
        act_per_iteration=act["root"] + sims * act["recurrent"],
        reanalysis_encode_per_update=encode,
        reanalysis_search_per_update=search,
        gradient_per_update=gradient,
        update=update,
        per_env_step=(update * cfg.replay_ratio) + (act["root"] + sims * act["recurrent"]) / agent.envs_per_state,
    )


def filled_state(agent: CompiledAgent, key: jax.Array):
    """A fresh state whose replay holds enough rows (acting only, no learning) to sample a batch."""
    state = agent.init(key)
    rows = 2 * agent.learner.window + 2
    act = jax.jit(lambda s: jax.lax.scan(lambda s, _: agent.act(s), s, None, length=rows)[0])
    return act(state)


def main(argv: list[str] | None = None) -> list[dict]:
    """`python -m benchmarks flops [--presets atari dmc_state ...]`: model FLOPs of an update and of
    an acting iteration at each preset's real sizes (device-independent: combine with any
    machine's measured rates for its ceiling)."""
    import argparse

    from benchmarks.common import print_table, save_json
    from benchmarks.common import PRESET_ENVS, build_agent

    parser = argparse.ArgumentParser(prog="python -m benchmarks flops", description=main.__doc__)
    parser.add_argument("--presets", nargs="+", default=["atari", "dmc_state", "classic", "control"],
                        choices=list(PRESET_ENVS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for preset in args.presets:
        agent = build_agent(preset)
        flops = loop_flops(agent, filled_state(agent, jax.random.PRNGKey(0)))
        rows.append(dict(preset=preset, **{k: v / 1e9 for k, v in flops.items()}))
        print(f"  {preset}: {flops['update'] / 1e9:,.1f} GFLOP per update", flush=True)
    print_table("Model GFLOP (XLA cost analysis)", rows,
                ["preset", "reanalysis_encode_per_update", "reanalysis_search_per_update", "gradient_per_update",
                 "update", "act_per_iteration", "per_env_step"])
    save_json(args.json, "flops", rows)
    return rows
