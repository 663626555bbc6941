"""gymnasium environments on the host, stepped from inside the compiled loop through `jax.experimental.io_callback`.

For envs that exist only as Python objects. Each agent step leaves the device, steps `num_envs` gymnasium
envs one after the other in this process and comes back, so this is the slow path: it has envpool's limits
(the env state lives outside JAX: no vmap over seeds, which share one pool of envs instead; no `--devices`
> 1; a resumed run restarts its envs from fresh episodes) and is single-threaded besides. The late reset of
`ezv.envs.core` is done here on the host: the step after an episode ends resets that env instead of
acting, so the agent sees every final observation and every transition once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ezv.envs.core import Box, Discrete, EnvSpec, TimeStep, VecEnv, first_timestep
from ezv.envs.errors import CUSTOM_DOMAIN, EnvContractError

BACKEND = "gymnasium"


@struct.dataclass
class HostEnvState:
    # The envs live on the host; this counter only threads the calls' order through the program (and
    # tells a checkpoint how many steps the pool had taken).
    calls: jax.Array


def _space_of(env: Any, env_id: str) -> tuple[Discrete | Box, tuple[int, ...]]:
    from gymnasium import spaces

    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return Discrete(int(space.n)), ()
    if isinstance(space, spaces.Box):
        dim = int(np.prod(space.shape))
        low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise EnvContractError(f"{env_id}: the Box action space has infinite bounds; the agent squashes its "
                                   "actions into [low, high], so wrap the env with finite ones "
                                   "(gymnasium.wrappers.RescaleAction or ClipAction on a bounded space).")
        return Box(dim, tuple(map(float, low)), tuple(map(float, high))), tuple(space.shape)
    raise EnvContractError(f"{env_id}: action space {space} is not supported; ezv takes Discrete(n) or a Box.")


def _obs_of(env: Any, env_id: str) -> tuple[tuple[int, ...], np.dtype]:
    from gymnasium import spaces

    space = env.observation_space
    if not isinstance(space, spaces.Box):
        raise EnvContractError(f"{env_id}: observation space {space} is not supported; ezv takes one Box "
                               "(gymnasium.wrappers.FlattenObservation turns Dict/Tuple spaces into one).")
    shape = tuple(int(d) for d in space.shape)
    image = len(shape) == 3 and space.dtype == np.uint8
    return shape, np.dtype(np.uint8 if image else np.float32)


class HostPool:
    """`num_envs` gymnasium envs and their late-reset bookkeeping, on the host."""

    def __init__(self, envs: list[Any], spec: EnvSpec, action_shape: tuple[int, ...], action_start: int = 0):
        self.envs, self.spec, self.action_shape = envs, spec, action_shape
        self.action_start = action_start  # gymnasium's Discrete(n, start): the agent's 0..n-1 shifted
        n = len(envs)
        self.needs_reset = np.zeros(n, bool)
        self.elapsed = np.zeros(n, np.int32)
        self.running = np.zeros(n, np.float32)

    def _obs(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, self.spec.obs_dtype).reshape(self.spec.obs_shape)

    def reset(self, seed: np.ndarray) -> np.ndarray:
        base = int(np.asarray(seed, np.uint64).reshape(-1)[-1]) % (2**31 - len(self.envs))
        self.needs_reset[:] = False
        self.elapsed[:] = 0
        self.running[:] = 0.0
        return np.stack([self._obs(env.reset(seed=base + i)[0]) for i, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(self.envs)
        obs = np.empty((n, *self.spec.obs_shape), self.spec.obs_dtype)
        reward = np.zeros(n, np.float32)
        terminated, truncated, first = np.zeros(n, bool), np.zeros(n, bool), self.needs_reset.copy()
        discrete = isinstance(self.spec.action_space, Discrete)
        for i, env in enumerate(self.envs):
            if first[i]:  # the previous step ended the episode: this step starts the next one, ignoring its action
                obs[i] = self._obs(env.reset()[0])
                self.elapsed[i], self.running[i] = 0, 0.0
                continue
            action = (int(actions[i]) + self.action_start if discrete
                      else np.asarray(actions[i], np.float32).reshape(self.action_shape))
            o, r, term, trunc, _ = env.step(action)
            obs[i], reward[i] = self._obs(o), float(r)
            self.elapsed[i] += 1
            self.running[i] += reward[i]
            terminated[i] = bool(term)
            truncated[i] = (bool(trunc) or self.elapsed[i] >= self.spec.max_episode_steps) and not terminated[i]
        done = terminated | truncated
        self.needs_reset = done
        return (obs, reward, terminated, truncated, first, done, np.where(done, self.running, 0.0).astype(np.float32),
                np.where(done, self.elapsed, 0).astype(np.int32))


def make_host_env(env_id: str, first_env: Any, make_one: Callable[[], Any], num_envs: int, seed: int,
                  limit: int | None, options: dict[str, Any]) -> VecEnv:
    """`num_envs` gymnasium envs (`first_env` and `num_envs - 1` more from `make_one`) as a `VecEnv`."""
    from jax.experimental import io_callback

    action_space, action_shape = _space_of(first_env, env_id)
    obs_shape, obs_dtype = _obs_of(first_env, env_id)
    own_limit = getattr(getattr(first_env, "spec", None), "max_episode_steps", None)
    max_steps = limit or own_limit
    if not max_steps:
        raise EnvContractError(f"{env_id}: the gymnasium env has no time limit (env.spec.max_episode_steps); give "
                               "one with the option max_episode_steps (--env-options '{\"max_episode_steps\": 500}').")
    spec = EnvSpec(env_id=env_id, backend=BACKEND, domain=CUSTOM_DOMAIN, obs_shape=obs_shape, obs_dtype=obs_dtype,
                   action_space=action_space, max_episode_steps=int(max_steps), options=options)
    start = int(getattr(first_env.action_space, "start", 0)) if isinstance(action_space, Discrete) else 0
    pool = HostPool([first_env] + [make_one() for _ in range(num_envs - 1)], spec, action_shape, start)
    n = num_envs
    obs_struct = jax.ShapeDtypeStruct((n, *obs_shape), obs_dtype)
    step_structs = (obs_struct, *(jax.ShapeDtypeStruct((n,), d) for d in (jnp.float32, bool, bool, bool, bool)),
                    jax.ShapeDtypeStruct((n,), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.int32))

    def reset(key: jax.Array) -> tuple[HostEnvState, TimeStep]:
        words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        # The env seed keeps two runs with different seeds apart when reset with the same key.
        obs = io_callback(pool.reset, obs_struct, jnp.asarray(words, jnp.uint32) ^ jnp.uint32(seed), ordered=True)
        return HostEnvState(calls=jnp.zeros((), jnp.int32)), first_timestep(obs)

    def step(state: HostEnvState, action: jax.Array) -> tuple[HostEnvState, TimeStep]:
        out = io_callback(pool.step, step_structs, action, ordered=True)
        obs, reward, terminated, truncated, first, done, episode_return, episode_length = out
        ts = TimeStep(obs=obs, reward=reward, terminated=terminated, truncated=truncated, first=first,
                      episode_done=done, episode_return=episode_return, episode_length=episode_length)
        return HostEnvState(calls=state.calls + 1), ts

    return VecEnv(spec=spec, num_envs=n, reset=reset, step=step, pure=False)
