"""Search throughput: simulations/s and roots/s vs batch size, for the Atari and DMC networks.

    python -m benchmarks search [--quick] [--presets atari dmc_state] [--batches 4 256 1536]
                                [--q-normalisations tree node] [--json out.json]

One jitted call of the agent's search (root inference + mctx search, acting settings) over a
batch of roots with freshly initialised networks: the acting batch is `num_envs`, the
reanalysis batch of one update is `batch_size x (unroll + 1)`, and the loop's grouped reanalysis
searches `updates_per_iteration` times that. The model FLOPs of a search
(root inference + one recurrent call per simulation, from XLA's cost analysis) give the
achieved FLOP/s; the rest of a search's time is mctx's tree bookkeeping. `--q-normalisations`
times each Q normalisation rule (the tree rule's min–max is extra bookkeeping per selection).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.common import PRESET_ENVS, build_agent, print_table, save_json, time_compiled
from benchmarks.flops import model_flops
from ezv.agent import CompiledAgent
from ezv.model import EZModel


def search_fn(model: EZModel):
    def run(variables, key, obs):
        out = model.search(variables, key, obs)
        return out.action, out.policy, out.value

    return jax.jit(run)


def measure(agent: CompiledAgent, batch: int, repeats: int = 3) -> dict:
    params_key, obs_key, key = jax.random.split(jax.random.PRNGKey(0), 3)
    model = agent.model
    shape = (batch,) + model.stacked_obs_shape
    if jnp.issubdtype(model.spec.obs_dtype, jnp.integer):
        obs = jax.random.randint(obs_key, shape, 0, 256).astype(model.spec.obs_dtype)
    else:
        obs = jax.random.normal(obs_key, shape, jnp.float32)
    variables = jax.jit(model.init_variables)(params_key)  # no replay: the Atari one is gigabytes
    compile_s, seconds = time_compiled(search_fn(model), variables, key, obs, repeats=repeats)
    sims = model.num_simulations
    # FLOPs are the same on every device: counted on a CPU only (each count is another compile).
    search_flops = float("nan")
    if jax.default_backend() == "cpu":
        flops = model_flops(model, variables, batch)
        search_flops = flops["root"] + sims * flops["recurrent"]
    return dict(
        preset=agent.cfg.preset,
        batch=batch,
        simulations=sims,
        ms_per_search=1e3 * seconds,
        roots_per_s=batch / seconds,
        simulations_per_s=batch * sims / seconds,
        model_gflop_per_search=search_flops / 1e9,
        model_tflops=search_flops / seconds / 1e12,
        compile_s=compile_s,
    )


def default_batches(agent: CompiledAgent, quick: bool) -> list[int]:
    L = agent.cfg.learner
    reanalysis = L.batch_size * (L.unroll_steps + 1)
    if quick and jax.default_backend() == "cpu":  # the Atari network takes ~1 s per acting search here
        return [agent.envs_per_state] if agent.cfg.preset == "atari" else [agent.envs_per_state, L.batch_size]
    # The loop reanalyses an iteration's batches in one search: updates_per_iteration x that many roots.
    return sorted({agent.envs_per_state, L.batch_size, reanalysis, reanalysis * agent.cfg.updates_per_iteration})


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks search", description=__doc__)
    parser.add_argument("--presets", nargs="+", default=None, choices=list(PRESET_ENVS))
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--q-normalisations", nargs="+", default=["tree"], choices=["tree", "node"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    presets = args.presets or ["atari", "dmc_state"]
    rows = []
    for preset in presets:
        for rule in args.q_normalisations:
            agent = build_agent(preset, flags=["--search.q-normalisation", rule])
            for batch in args.batches or default_batches(agent, args.quick):
                row = dict(measure(agent, batch), q_normalisation=rule)
                print(f"  {preset:10s} {rule:4s} batch {batch:5d}: {row['roots_per_s']:>10,.0f} roots/s "
                      f"{row['simulations_per_s']:>12,.0f} sims/s", flush=True)
                rows.append(row)
    print_table(
        f"Search throughput on {jax.devices()[0].device_kind} (acting settings, fresh networks)",
        rows,
        ["preset", "q_normalisation", "batch", "simulations", "ms_per_search", "roots_per_s", "simulations_per_s",
         "model_gflop_per_search", "model_tflops", "compile_s"],
    )
    save_json(args.json, "search", rows)
    return rows


if __name__ == "__main__":
    main()
