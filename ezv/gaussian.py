"""The squashed-Gaussian policy of continuous control (reference §2.2/§2.3, §3.3, §5).

The policy head outputs 2·dim numbers per state: raw means and raw scales. They become
    μ = 5·tanh(μ_raw / 5),   σ = softplus(σ_raw + 1) + 0.1,
and an action is a = tanh(u) with u ~ N(μ, σ²), clipped to ±`ACTION_CLIP` so that atanh stays
finite. log p(a) includes the tanh Jacobian: Σ_d [log N(atanh a_d; μ_d, σ_d) − log(1 − a_d²)].

Actions live in [-1, 1]^dim ("policy space"); `to_env` maps them affinely onto the env's bounds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ACTION_CLIP = 0.999  # the reference clips every sampled action to ±0.999
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def mean_and_std(outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., 2·dim] head outputs -> (μ [..., dim], σ [..., dim])."""
    raw_mean, raw_std = jnp.split(outputs, 2, axis=-1)
    return 5.0 * jnp.tanh(raw_mean / 5.0), jax.nn.softplus(raw_std + 1.0) + 0.1


def sample(key: jax.Array, outputs: jax.Array, num: int, std_scale: float = 1.0) -> jax.Array:
    """[B, 2·dim] -> [B, num, dim] actions tanh(N(μ, (std_scale·σ)²)), clipped to ±ACTION_CLIP."""
    mean, std = mean_and_std(outputs)
    noise = jax.random.normal(key, mean.shape[:-1] + (num,) + mean.shape[-1:], mean.dtype)
    u = mean[..., None, :] + std_scale * std[..., None, :] * noise
    return jnp.clip(jnp.tanh(u), -ACTION_CLIP, ACTION_CLIP)


def log_prob(outputs: jax.Array, actions: jax.Array) -> jax.Array:
    """log p(a) of policy-space actions under the squashed Gaussian.

    outputs [..., 2·dim], actions [..., N, dim] -> [..., N].
    """
    mean, std = mean_and_std(outputs)
    a = jnp.clip(actions, -ACTION_CLIP, ACTION_CLIP)
    u = jnp.arctanh(a)
    z = (u - mean[..., None, :]) / std[..., None, :]
    gaussian = -0.5 * jnp.square(z) - jnp.log(std[..., None, :]) - _LOG_SQRT_2PI
    jacobian = jnp.log1p(-jnp.square(a))
    return jnp.sum(gaussian - jacobian, axis=-1)


def entropy_estimate(key: jax.Array, outputs: jax.Array, num: int) -> jax.Array:
    """Monte-Carlo entropy −E[log p(a)] from `num` reparameterised samples (differentiable in
    μ and σ, reference §5: 1024 samples clipped to ±0.999). [..., 2·dim] -> [...]."""
    mean, std = mean_and_std(outputs)
    noise = jax.random.normal(key, mean.shape[:-1] + (num,) + mean.shape[-1:], mean.dtype)
    u = mean[..., None, :] + std[..., None, :] * noise
    a = jnp.clip(jnp.tanh(u), -ACTION_CLIP, ACTION_CLIP)
    return -jnp.mean(log_prob(outputs, a), axis=-1)


def to_env(actions: jax.Array, low: tuple[float, ...], high: tuple[float, ...]) -> jax.Array:
    """Policy-space actions in [-1, 1] -> the env's [low, high] box."""
    low_a, high_a = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return low_a + (actions + 1.0) * 0.5 * (high_a - low_a)


def from_env(actions: jax.Array, low: tuple[float, ...], high: tuple[float, ...]) -> jax.Array:
    """The env's [low, high] box -> policy-space actions in [-1, 1] (the inverse of `to_env`)."""
    low_a, high_a = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return (actions - low_a) / (high_a - low_a) * 2.0 - 1.0
