"""Image augmentation on device (reference §6): random shift and intensity, one draw per sample.

Random shift: replicate-pad by `pad` pixels and crop back at a random integer offset (the
DrQ-v2 scheme; its bilinear `grid_sample` at integer offsets is an exact crop). One shift
applies to all stacked frames of a sample. Intensity: x · (1 + 0.05 · clip(N(0, 1), ±2)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C], same dtype."""
    b, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (height, width, channels))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def intensity(key: jax.Array, images: jax.Array, scale: float = 0.05) -> jax.Array:
    """[B, ...] uint8 or float -> float32 scaled per sample."""
    noise = jnp.clip(jax.random.normal(key, (images.shape[0],) + (1,) * (images.ndim - 1)), -2.0, 2.0)
    return images.astype(jnp.float32) * (1.0 + scale * noise)


def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    shift_key, intensity_key = jax.random.split(key)
    return intensity(intensity_key, random_shift(shift_key, images))
