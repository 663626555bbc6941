"""One wrapper that turns any single-env pure-JAX environment into a `VecEnv`.

Backends (gymnax, MuJoCo Playground, brax) only provide an unbatched reset and an
unbatched step *without* auto-reset or time limit. This module adds, identically for
all of them: batching, the dm_env-style late reset of `core.py`, the time limit
(`truncated`), episode statistics and the env rng.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from ezv.envs.core import EnvSpec, TimeStep, VecEnv, first_timestep, skip_resetting, step_timestep

# reset(key) -> (inner_state, obs); step(inner_state, action, key) -> (inner_state, obs, reward, terminated)
ResetFn = Callable[[jax.Array], tuple[Any, jax.Array]]
StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class SingleEnv:
    """An unbatched pure environment: one agent step (action repeat included), no reset logic."""

    reset: ResetFn
    step: StepFn


@struct.dataclass
class FunctionalEnvState:
    inner: Any  # the backend's own state, batched over envs
    key: jax.Array
    elapsed: jax.Array  # [N] int32 agent steps since the episode's first observation
    running_return: jax.Array  # [N] float32
    needs_reset: jax.Array  # [N] bool: the previous step ended the episode


def select_envs(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per-env select over two batched pytrees ([N, ...] leaves)."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def make_vec_env(spec: EnvSpec, num_envs: int, seed: int, single: SingleEnv) -> VecEnv:
    """Batch `single` over `num_envs` envs with late reset, time limit and episode stats.

    `seed` is folded into the key given to `reset`, so envs made with different seeds
    produce different episodes even when reset with the same key.
    """
    n = num_envs
    max_steps = spec.max_episode_steps
    batched_reset = jax.vmap(single.reset)
    batched_step = jax.vmap(single.step)

    def reset(key: jax.Array) -> tuple[FunctionalEnvState, TimeStep]:
        key, reset_key = jax.random.split(jax.random.fold_in(key, seed))
        inner, obs = batched_reset(jax.random.split(reset_key, n))
        state = FunctionalEnvState(
            inner=inner,
            key=key,
            elapsed=jnp.zeros((n,), jnp.int32),
            running_return=jnp.zeros((n,), jnp.float32),
            needs_reset=jnp.zeros((n,), bool),
        )
        return state, first_timestep(obs)

    def step(state: FunctionalEnvState, action: jax.Array) -> tuple[FunctionalEnvState, TimeStep]:
        key, step_key, reset_key = jax.random.split(state.key, 3)
        inner, obs, reward, terminated = batched_step(state.inner, action, jax.random.split(step_key, n))
        reward = reward.astype(jnp.float32)
        elapsed = state.elapsed + 1
        truncated = (elapsed >= max_steps) & ~terminated

        # Envs whose previous step ended an episode start a new one now; their action is
        # ignored. Resetting is skipped entirely on the (common) steps where no env ends.
        resetting = state.needs_reset
        inner, obs = jax.lax.cond(
            jnp.any(resetting),
            lambda: select_envs(resetting, batched_reset(jax.random.split(reset_key, n)), (inner, obs)),
            lambda: (inner, obs),
        )
        reward, terminated, truncated = skip_resetting(resetting, reward, terminated, truncated)
        elapsed = jnp.where(resetting, 0, elapsed)
        running_return = jnp.where(resetting, 0.0, state.running_return + reward)
        ended = terminated | truncated
        timestep = step_timestep(obs, reward, terminated, truncated, resetting, ended, running_return, elapsed)
        new_state = FunctionalEnvState(
            inner=inner, key=key, elapsed=elapsed, running_return=running_return, needs_reset=ended
        )
        return new_state, timestep

    return VecEnv(spec=spec, num_envs=n, reset=reset, step=step, pure=True)


def repeat_action(
    step_once: Callable[[Any, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]], repeats: int
) -> Callable:
    """Apply the same action `repeats` times, summing rewards and stopping at termination.

    step_once(state, action) -> (state, obs, reward, terminated). After a terminal
    sub-step the state and observation are frozen, so the final observation is the
    terminal one and later sub-steps add no reward.
    """
    if repeats == 1:
        return step_once

    def step(state, action):
        def body(carry, _):
            state, obs, total, done = carry
            new_state, new_obs, reward, terminated = step_once(state, action)
            state = jax.tree.map(lambda new, old: jnp.where(done, old, new), new_state, state)
            obs = jnp.where(done, obs, new_obs)
            total = total + jnp.where(done, 0.0, reward)
            return (state, obs, total, done | terminated), None

        state, obs, reward, terminated = step_once(state, action)
        (state, obs, reward, terminated), _ = jax.lax.scan(
            body, (state, obs, reward.astype(jnp.float32), terminated), None, length=repeats - 1
        )
        return state, obs, reward, terminated

    return step
