"""Batched, pure-functional environments that the compiled training loop steps.

    env = ezv.envs.make("Breakout-v5", num_envs=8, seed=0)
    state, ts = env.reset(key)
    state, ts = env.step(state, actions)      # inside jit / lax.scan

See `ezv.envs.core` for the contract (including the auto-reset semantics).
"""

from ezv.envs.core import Box, Discrete, EnvSpec, TimeStep, VecEnv
from ezv.envs.registry import (
    BACKENDS,
    EnvOptionError,
    UnknownEnvError,
    backend_of,
    domain_of,
    has_continuous_actions,
    known_env_ids,
    make,
)

__all__ = [
    "BACKENDS",
    "Box",
    "Discrete",
    "EnvOptionError",
    "EnvSpec",
    "TimeStep",
    "UnknownEnvError",
    "VecEnv",
    "backend_of",
    "domain_of",
    "has_continuous_actions",
    "known_env_ids",
    "make",
]
