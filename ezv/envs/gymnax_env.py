"""gymnax backend: CartPole-v1, Acrobot-v1, Pendulum-v1, *-MinAtar, *-bsuite, *-misc."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ezv.envs.core import Box, Discrete, EnvSpec, VecEnv
from ezv.envs.functional import SingleEnv, make_vec_env

# gymnax folds its time limit into `done`. Where the limit is a truncation (not part of
# the task), we lift it out of gymnax and apply it ourselves so that `terminated` and
# `truncated` are told apart. bsuite tasks end by design after a fixed number of steps,
# which is a termination, so their limit stays inside gymnax.
_LIFTED_LIMIT = 2**30


@dataclasses.dataclass(frozen=True)
class GymnaxOptions:
    """max_episode_steps: time limit in agent steps (None: gymnax's own limit for the task)."""

    max_episode_steps: int | None = None


def gymnax_domain(env_id: str) -> str:
    if env_id.endswith("-MinAtar"):
        return "minatar"
    if env_id.endswith("-bsuite"):
        return "bsuite"
    if env_id.endswith("-misc"):
        return "misc"
    return "classic"


def has_continuous_actions(env_id: str) -> bool:
    import gymnax
    from gymnax.environments import spaces

    env, params = gymnax.make(env_id)
    return isinstance(env.action_space(params), spaces.Box)


def known_ids() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def make(env_id: str, num_envs: int, seed: int, options: GymnaxOptions) -> VecEnv:
    import gymnax

    env, params = gymnax.make(env_id)
    domain = gymnax_domain(env_id)
    task_limit = int(params.max_steps_in_episode)
    if domain == "bsuite" and options.max_episode_steps is not None and options.max_episode_steps > task_limit:
        raise ValueError(
            f"max_episode_steps={options.max_episode_steps} exceeds {env_id}'s task-defined episode "
            f"length {task_limit}; bsuite episodes end by design at that length."
        )
    spec, single = adapt(env, params, env_id, "gymnax", domain, options.max_episode_steps,
                         lift_limit=domain != "bsuite", options=dataclasses.asdict(options))
    return make_vec_env(spec, num_envs, seed, single)


def adapt(env, params, env_id: str, backend: str, domain: str, max_episode_steps: int | None, *, lift_limit: bool,
          options: dict) -> tuple[EnvSpec, SingleEnv]:
    """The spec and unbatched functions of a gymnax environment object (`reset_env`, `step_env`,
    `observation_space`, `action_space`), a built-in one or a user's. `lift_limit`: the task's time limit
    is a truncation, applied by ezv (`max_episode_steps`, default the task's) rather than inside `done`."""
    task_limit = int(params.max_steps_in_episode)
    max_steps = max_episode_steps or task_limit
    if lift_limit:
        params = params.replace(max_steps_in_episode=_LIFTED_LIMIT)

    obs_space = env.observation_space(params)
    act_space = env.action_space(params)
    if hasattr(act_space, "n"):
        action_space = Discrete(int(act_space.n))
    else:
        dim = int(np.prod(act_space.shape))
        low = np.broadcast_to(np.asarray(act_space.low, np.float32), (dim,))
        high = np.broadcast_to(np.asarray(act_space.high, np.float32), (dim,))
        action_space = Box(dim, tuple(map(float, low)), tuple(map(float, high)))

    spec = EnvSpec(
        env_id=env_id,
        backend=backend,
        domain=domain,
        obs_shape=tuple(int(d) for d in obs_space.shape),
        obs_dtype=np.dtype(obs_space.dtype),
        action_space=action_space,
        max_episode_steps=int(max_steps),
        options=options,
    )
    discrete = isinstance(action_space, Discrete)
    act_shape = tuple(act_space.shape)

    def reset(key):
        obs, state = env.reset_env(key, params)
        return state, obs

    def step(state, action, key):
        if not discrete:
            action = action.reshape(act_shape)
        obs, state, reward, done, _ = env.step_env(key, state, action, params)
        return state, obs, jnp.asarray(reward, jnp.float32), jnp.asarray(done, bool)

    return spec, SingleEnv(reset=reset, step=step)
