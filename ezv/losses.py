"""The EZ-V2 loss over an unroll of K steps (reference §5).

L = (1/K) · mean_b w_b [ Σ_{k=0..K} m_k (c_v CE_v + c_π ℓ_π − c_H Ĥ) + Σ_{k=1..K} m_k (c_r CE_r + c_c ℓ_c) ]

with m_k the unroll mask (the policy and entropy terms also drop terminal states, whose
search policy is meaningless), w_b the PER importance weight, CE against two-hot supports,
ℓ_c the negative cosine similarity between the predicted projection of the unrolled latent
and the stop-gradient projection of the encoded true observation (SimSiam), and ℓ_π:
- discrete: the cross-entropy against the reanalysed π′;
- continuous "full": −Σᵢ π′ᵢ log π(aᵢ) over the K searched candidates aᵢ;
- continuous "simple": −log π(a*) of the search's choice a*.
Ĥ is the Monte-Carlo entropy of the squashed-Gaussian policy (continuous only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ezv import gaussian
from ezv.config import LearnerConfig
from ezv.supports import Support


@struct.dataclass
class Unroll:
    """Online-network outputs of one learner unroll."""

    policy_logits: jax.Array  # [B, K+1, A]
    value_logits: jax.Array  # [B, K+1, value_bins]
    reward_logits: jax.Array  # [B, K, reward_bins]
    projection: jax.Array  # [B, K, D] predictor(projector(unrolled latent k))


@struct.dataclass
class Targets:
    value: jax.Array  # [B, K+1]
    reward: jax.Array  # [B, K]
    policy: jax.Array  # [B, K+1, A]
    projection: jax.Array  # [B, K, D] projector(representation(o_k)), gradient stopped
    mask: jax.Array  # [B, K+1]
    policy_mask: jax.Array  # [B, K+1]
    candidates: jax.Array | None = None  # [B, K+1, Ks, dim] searched actions π′ is over (continuous)
    chosen: jax.Array | None = None  # [B, K+1, dim] the search's choice a* (continuous)


def unit_vectors(x: jax.Array) -> jax.Array:
    """x / (‖x‖ + 1e-8) along the last axis; a zero row stays 0 with a zero gradient. ‖x‖'s gradient is NaN
    at 0, and one projection that is exactly zero (which a small network's ReLU can give) turned every
    parameter NaN. The norm is taken of a stand-in for zero rows, so every other row's value and gradient
    stay bit for bit what they were."""
    zero = jnp.all(x == 0, axis=-1, keepdims=True)
    norm = jnp.linalg.norm(jnp.where(zero, 1.0, x), axis=-1, keepdims=True)
    return jnp.where(zero, 0.0, x / (norm + 1e-8))


def negative_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    return -jnp.sum(unit_vectors(a) * unit_vectors(b), axis=-1)


def policy_cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def continuous_policy_loss(outputs: jax.Array, tgt: Targets, kind: str) -> jax.Array:
    """[B, K+1] ℓ_π of the squashed-Gaussian head (`kind` "full" or "simple", see module doc)."""
    if kind == "full":
        log_p = gaussian.log_prob(outputs, jax.lax.stop_gradient(tgt.candidates))
        return -jnp.sum(jax.lax.stop_gradient(tgt.policy) * log_p, axis=-1)
    return -gaussian.log_prob(outputs, jax.lax.stop_gradient(tgt.chosen)[..., None, :])[..., 0]


def ez_loss(
    out: Unroll,
    tgt: Targets,
    weights: jax.Array,
    cfg: LearnerConfig,
    value_support: Support,
    reward_support: Support,
    continuous_loss: str | None = None,
    entropy_key: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (scalar loss, per-term metrics: batch means of each masked term, unweighted by PER).

    `continuous_loss` ("full" or "simple") selects the continuous policy loss; None means
    discrete logits. `entropy_key` draws the entropy samples (continuous, entropy_coef > 0).
    """
    mask = tgt.mask.astype(jnp.float32)
    step_mask = mask[:, 1:]
    value = value_support.cross_entropy(out.value_logits, tgt.value) * mask
    if continuous_loss is None:
        policy = policy_cross_entropy(out.policy_logits, jax.lax.stop_gradient(tgt.policy))
    else:
        policy = continuous_policy_loss(out.policy_logits, tgt, continuous_loss)
    policy = policy * tgt.policy_mask
    reward = reward_support.cross_entropy(out.reward_logits, tgt.reward) * step_mask
    consistency = negative_cosine(out.projection, jax.lax.stop_gradient(tgt.projection)) * step_mask

    per_sample = (
        cfg.value_coef * value.sum(1)
        + cfg.policy_coef * policy.sum(1)
        + cfg.reward_coef * reward.sum(1)
        + cfg.consistency_coef * consistency.sum(1)
    )
    metrics = {}
    if continuous_loss is not None and cfg.entropy_coef:
        entropy = gaussian.entropy_estimate(entropy_key, out.policy_logits, cfg.entropy_samples) * tgt.policy_mask
        per_sample = per_sample - cfg.entropy_coef * entropy.sum(1)
        metrics["policy_entropy"] = entropy.sum(1).mean() / jnp.maximum(tgt.policy_mask.sum(1).mean(), 1.0)
    loss = jnp.mean(weights * per_sample) / cfg.unroll_steps
    metrics.update(
        loss=loss,
        value_loss=value.sum(1).mean(),
        policy_loss=policy.sum(1).mean(),
        reward_loss=reward.sum(1).mean(),
        consistency_loss=consistency.sum(1).mean(),
    )
    return loss, metrics
