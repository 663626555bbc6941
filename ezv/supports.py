"""Categorical value/reward supports: the h(x) transform, two-hot encoding and decoding.

Scalars are predicted as categorical distributions over atoms placed in the transformed
space y = h(x), trained by cross-entropy against the two-hot encoding of h(target), and
decoded as h⁻¹(Σ p_i y_i) (reference §2.4).

ezv uses the correct h for negative values, h(x) = sign(x)(√(|x|+1) − 1) + εx. The
reference's encoder computes sign(x)(√(|x|+1) − 1 + εx), giving the linear term the wrong
sign for x < 0, while its decoder inverts the correct h (reference §0, §9.6).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

EPS = 1e-3


def h(x: jax.Array, eps: float = EPS) -> jax.Array:
    """The invertible value transform of Pohlen et al. (2018), odd in x."""
    return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def h_inv(y: jax.Array, eps: float = EPS) -> jax.Array:
    """Exact inverse of `h`."""
    root = (jnp.sqrt(1.0 + 4.0 * eps * (jnp.abs(y) + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return jnp.sign(y) * (jnp.square(root) - 1.0)


@dataclasses.dataclass(frozen=True)
class Support:
    """`bins` atoms spaced linearly over [-h_max, h_max] in h-space.

    Atari: Support(601, 300.0) (integer atoms −300…300). DMC value: Support(51, h(299)),
    DMC reward: Support(51, h(2)); see `Support.covering`.
    """

    bins: int
    h_max: float

    @classmethod
    def covering(cls, bins: int, max_abs_value: float) -> "Support":
        """A support whose range covers scalars in [-max_abs_value, max_abs_value]."""
        return cls(bins, float(h(jnp.float32(max_abs_value))))

    @property
    def atoms(self) -> jax.Array:
        return jnp.linspace(-self.h_max, self.h_max, self.bins, dtype=jnp.float32)

    def encode(self, x: jax.Array) -> jax.Array:
        """Two-hot encoding of h(x) (clipped to the support): [...] -> [..., bins]."""
        y = jnp.clip(h(x.astype(jnp.float32)), -self.h_max, self.h_max)
        pos = (y + self.h_max) / (2.0 * self.h_max) * (self.bins - 1)
        low = jnp.clip(jnp.floor(pos), 0, self.bins - 2)
        upper_weight = pos - low
        low = low.astype(jnp.int32)
        return jax.nn.one_hot(low, self.bins) * (1.0 - upper_weight)[..., None] + jax.nn.one_hot(
            low + 1, self.bins
        ) * upper_weight[..., None]

    def decode(self, logits: jax.Array) -> jax.Array:
        """Expected value in h-space, mapped back: [..., bins] -> [...]."""
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return h_inv(probs @ self.atoms)

    def cross_entropy(self, logits: jax.Array, target: jax.Array) -> jax.Array:
        """CE between the predicted distribution and the two-hot encoding of scalar targets."""
        return -jnp.sum(self.encode(target) * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
