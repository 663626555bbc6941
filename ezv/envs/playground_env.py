"""MuJoCo Playground backend (`dmc/<Task>`: its 25 DeepMind Control Suite tasks, in MJX) and brax (`brax/<env>`).

Both expose `reset(rng) -> State` and `step(State, action) -> State` with `obs`, `reward`
and `done`, without a time limit; `functional.make_vec_env` adds the rest. Every reset
draws a fresh randomised initial state from its key (no cached first state).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from ezv.envs.core import Box, EnvSpec, VecEnv
from ezv.envs.functional import SingleEnv, make_vec_env, repeat_action

# dm_control's tasks run 1000 control steps; with action repeat 2 that is 500 agent steps.
DMC_EPISODE_CONTROL_STEPS = 1000


def _default_impl() -> str:
    """MJX's pure-JAX pipeline on CPU; MuJoCo Warp on GPU when warp-lang is installed."""
    if jax.default_backend() == "gpu":
        try:
            import warp  # noqa: F401

            return "warp"
        except ImportError:
            return "jax"
    return "jax"


@dataclasses.dataclass(frozen=True)
class PlaygroundOptions:
    """impl: "jax" (CPU default) or "warp" (GPU); action_repeat: control steps per agent step;
    max_episode_steps: agent steps per episode (None: 1000 control steps / action_repeat)."""

    impl: str | None = None
    action_repeat: int = 2
    max_episode_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class BraxOptions:
    """backend: brax physics pipeline ("mjx", "generalized", "positional", "spring")."""

    backend: str = "generalized"
    action_repeat: int = 1
    max_episode_steps: int = 1000


def playground_known_ids() -> list[str]:
    from mujoco_playground import registry

    return [f"dmc/{name}" for name in registry.dm_control_suite.ALL_ENVS]


def brax_known_ids() -> list[str]:
    from brax import envs

    return [f"brax/{name}" for name in envs._envs if name != "fast"]


def _quiet_warp() -> None:
    # Importing mujoco_playground initialises warp, which prints a banner per process.
    os.environ.setdefault("WARP_LOG_LEVEL", "error")


def _single_env(env, action_repeat: int) -> SingleEnv:
    def reset(key):
        state = env.reset(key)
        return state, state.obs

    def step_once(state, action):
        state = env.step(state, action)
        return state, state.obs, state.reward, state.done > 0.5

    repeated = repeat_action(step_once, action_repeat)

    def step(state, action, key):
        del key  # dynamics are deterministic; randomness enters through resets
        state, obs, reward, terminated = repeated(state, action)
        return state, obs, jnp.asarray(reward, jnp.float32), terminated

    return SingleEnv(reset=reset, step=step)


def make_playground(env_id: str, num_envs: int, seed: int, options: PlaygroundOptions) -> VecEnv:
    _quiet_warp()
    from mujoco_playground import registry

    task = env_id.split("/", 1)[1]
    impl = options.impl or _default_impl()
    if impl not in ("jax", "warp"):
        raise ValueError(f"option impl={impl!r} is not supported for {env_id}: use 'jax' or 'warp'.")
    if options.action_repeat < 1:
        raise ValueError(f"option action_repeat must be >= 1, got {options.action_repeat}.")
    config = registry.get_default_config(task)
    config.impl = impl
    env = registry.load(task, config=config)
    episode_control_steps = int(getattr(config, "episode_length", DMC_EPISODE_CONTROL_STEPS))
    max_steps = options.max_episode_steps or episode_control_steps // options.action_repeat
    spec = _box_spec(env, env_id, "playground", "dmc", max_steps, {**dataclasses.asdict(options), "impl": impl})
    return make_vec_env(spec, num_envs, seed, _single_env(env, options.action_repeat))


def _box_spec(env, env_id: str, backend: str, domain: str, max_steps: int, options: dict) -> EnvSpec:
    """The spec of a brax-style env: float32 vector observations, actions in [-1, 1]^dim."""
    dim = int(env.action_size)
    return EnvSpec(
        env_id=env_id,
        backend=backend,
        domain=domain,
        obs_shape=(int(env.observation_size),),
        obs_dtype=np.dtype(np.float32),
        action_space=Box(dim, (-1.0,) * dim, (1.0,) * dim),
        max_episode_steps=int(max_steps),
        options=options,
    )


def make_brax(env_id: str, num_envs: int, seed: int, options: BraxOptions) -> VecEnv:
    from brax import envs

    name = env_id.split("/", 1)[1]
    try:
        env = envs.get_environment(name, backend=options.backend)
    except KeyError as e:
        raise ValueError(f"option backend={options.backend!r} is not a brax backend: {e}") from None
    spec = _box_spec(env, env_id, "brax", "brax", options.max_episode_steps, dataclasses.asdict(options))
    return make_vec_env(spec, num_envs, seed, _single_env(env, options.action_repeat))
