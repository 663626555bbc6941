"""Batched, pure-functional environments that the compiled training loop steps.

    env = ezv.envs.make("Breakout-v5", num_envs=8, seed=0)
    state, ts = env.reset(key)
    state, ts = env.step(state, actions)      # inside jit / lax.scan

See `ezv.envs.core` for the contract (including the auto-reset semantics), `ezv.envs.custom` for
registering your own env (`register`, `JaxEnv`) and `check_env` for testing one against the contract.
"""

from ezv.envs.contract import check_env
from ezv.envs.core import Box, Discrete, EnvSpec, TimeStep, VecEnv
from ezv.envs.custom import JaxEnv, registered_ids, unregister
from ezv.envs.errors import EnvContractError, EnvOptionError, UnknownEnvError
from ezv.envs.registry import (
    BACKENDS,
    backend_of,
    domain_of,
    has_continuous_actions,
    known_env_ids,
    make,
    register,
    runs_on_host,
    spec_of,
)

__all__ = [
    "BACKENDS",
    "Box",
    "Discrete",
    "EnvContractError",
    "EnvOptionError",
    "EnvSpec",
    "TimeStep",
    "UnknownEnvError",
    "JaxEnv",
    "VecEnv",
    "backend_of",
    "check_env",
    "domain_of",
    "has_continuous_actions",
    "known_env_ids",
    "make",
    "register",
    "registered_ids",
    "runs_on_host",
    "spec_of",
    "unregister",
]
