"""Frame histories: each env's last S observations, oldest first, as the network sees them.

Envs return single frames (the replay stores each frame once); the agent keeps `frames`
[E, S, *obs_shape] and stacks them on the last axis for the network (`stacked_obs`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ezv import replay as replay_lib
from ezv.envs.core import TimeStep


def init_frames(obs: jax.Array, frame_stack: int) -> jax.Array:
    """[E, S, *obs_shape]: a new episode's history is its first observation repeated."""
    return jnp.broadcast_to(obs[:, None], (obs.shape[0], frame_stack) + obs.shape[1:])


def push_frame(frames: jax.Array, ts: TimeStep) -> jax.Array:
    """Append the new observation; a new episode's stack is its first frame repeated."""
    shifted = jnp.concatenate([frames[:, 1:], ts.obs[:, None]], axis=1)
    repeated = jnp.broadcast_to(ts.obs[:, None], frames.shape)
    mask = ts.first.reshape((-1,) + (1,) * (frames.ndim - 1))
    return jnp.where(mask, repeated, shifted)


def stacked_obs(frames: jax.Array) -> jax.Array:
    """[E, *stacked_obs_shape]: the S frames on the last axis (S = 1: the observation itself)."""
    return replay_lib.stack_frames(frames) if frames.shape[1] > 1 else frames[:, 0]
