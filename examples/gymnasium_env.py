"""Train ezv on a gymnasium environment, one that exists only as a Python object on the host.

    python examples/gymnasium_env.py            # CartPole-v1 through gymnasium, 6k env steps, a few minutes
    python examples/gymnasium_env.py --quick    # a smoke run (what CI runs)

ezv steps gymnasium envs from inside its compiled loop through a JAX host callback (`ezv.envs.host`). That is
the slow path, with envpool's limits: every step leaves the device; several seeds share one pool of envs
instead of being vmapped; `--devices` > 1 is refused; the envs' state is not checkpointed (a resumed run starts
fresh episodes). Write the env in JAX (`examples/custom_jax_env.py`) when you can.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ezv


def make_cartpole():
    """Called once per env: each call returns a fresh gymnasium env (with its own time limit, here 500 steps)."""
    import gymnasium

    return gymnasium.make("CartPole-v1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run that only shows every step works")
    parser.add_argument("--out", default=None, help="folder for the run and the exported agent (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="ezv-example-")

    ezv.envs.register("GymCartPole-v1", make_cartpole)
    print(ezv.envs.check_env("GymCartPole-v1", steps=300))

    budget = {"total_env_steps": 400, "learning_starts": 200, "log_interval": 200, "eval_interval": 200,
              "network__latent_dim": 16, "network__mlp_hidden": 16, "learner__batch_size": 16} if args.quick else {
              "total_env_steps": 6000, "eval_interval": 2000, "log_interval": 400}
    agent = ezv.Agent("GymCartPole-v1", run_dir=os.path.join(out, "run"), quiet=args.quick, **budget)
    summary = agent.train()
    print(f"trained: {summary.env_steps} env steps, {summary.updates} updates; newest evaluation "
          f"{summary.eval_return_mean}")
    print(f"greedy search over 8 episodes: {agent.evaluate(episodes=8)}")
    print(f"best evaluation so far: {agent.best.evaluate(episodes=8)}")
    print("exported", *agent.export(os.path.join(out, "agents")))


if __name__ == "__main__":
    main()
