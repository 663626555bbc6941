"""Train ezv on an environment of your own, written in JAX: define it, register it, train, evaluate, export,
load the exported file back and act with it.

    python examples/custom_jax_env.py            # ~10k env steps, a few minutes on a laptop CPU
    python examples/custom_jax_env.py --quick    # a smoke run (what CI runs)

The same env from the command line, without registering (the module must be importable, e.g. from this folder):

    cd examples && python -m ezv.train --env-id custom_jax_env:make_reach --total-env-steps 10000
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import ezv
from ezv.envs import Discrete, JaxEnv

MOVES = jnp.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # up, down, right, left


def make_reach(step_size: float = 0.1, radius: float = 0.1) -> JaxEnv:
    """A point in the unit square walks to a random target: 4 moves, reward -0.1 x distance per step, +1 and the
    end of the episode on reaching the target. Options (`env_options` / `--env-options`) are these arguments."""

    def observe(pos, target):
        return jnp.concatenate([pos, target])

    def reset(key):
        start_key, target_key = jax.random.split(key)
        pos, target = jax.random.uniform(start_key, (2,)), jax.random.uniform(target_key, (2,))
        return {"pos": pos, "target": target}, observe(pos, target)

    def step(state, action):
        pos = jnp.clip(state["pos"] + step_size * MOVES[action], 0.0, 1.0)
        distance = jnp.linalg.norm(pos - state["target"])
        reached = distance < radius
        reward = jnp.where(reached, 1.0, -0.1 * distance)
        return {"pos": pos, "target": state["target"]}, observe(pos, state["target"]), reward, reached

    return JaxEnv(reset=reset, step=step, action_space=Discrete(4), max_episode_steps=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run that only shows every step works")
    parser.add_argument("--out", default=None, help="folder for the run and the exported agent (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="ezv-example-")

    ezv.envs.register("Reach-v0", make_reach)
    print(ezv.envs.check_env("Reach-v0"))  # random actions against ezv's env contract (late reset, time limit)

    # The preset is chosen from the env's spec (vector observations, discrete actions: `classic`); any field of
    # `ezv.Config` can be overridden, nested ones with `__`.
    budget = {"total_env_steps": 400, "learning_starts": 200, "log_interval": 200, "eval_interval": 200,
              "network__latent_dim": 16, "network__mlp_hidden": 16, "learner__batch_size": 16} if args.quick else {
              "total_env_steps": 10_000, "eval_interval": 2000, "log_interval": 400}
    agent = ezv.Agent("Reach-v0", run_dir=os.path.join(out, "run"), quiet=args.quick, **budget)
    summary = agent.train()
    print(f"trained: {summary.env_steps} env steps, {summary.updates} updates, run dir {summary.run_dir}")

    result = agent.evaluate(episodes=16)
    print(f"greedy search over 16 episodes: {result}")

    paths = agent.export(os.path.join(out, "agents"))  # an agent file and its model card (.md) per seed
    print(f"exported {paths[0]} and its model card")

    loaded = ezv.load_agent(paths[0])  # networks and search only: what you would ship
    state, obs = make_reach().reset(jax.random.PRNGKey(123))
    action = int(loaded.act(np.asarray(obs), jax.random.PRNGKey(0)))
    print(f"from {np.round(np.asarray(obs[:2]), 2)} towards {np.round(np.asarray(obs[2:]), 2)} the agent moves "
          f"{['up', 'down', 'right', 'left'][action]}")
    assert action == int(agent.act(np.asarray(obs), jax.random.PRNGKey(0)))  # the same networks, the same search


if __name__ == "__main__":
    main()
