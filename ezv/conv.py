"""2-D convolutions whose gradients XLA:CPU runs with its fast kernels inside loops.

XLA:CPU hands a convolution to its fast kernels (YNNPACK, Eigen) only in the NHWC/HWIO layout, and its
pass that rewrites other layouts into that one visits the program's entry computation only. JAX's
gradient convolutions have other layouts (the kernel gradient contracts over the batch: `f01b_i01o->01bf`;
the input gradient reads the kernel flipped and transposed: `b01f_01oi->b01f`), so inside the training
chunk's `lax.scan` bodies they run as naive loops: 62 of the 95 s of a `dmc_image_small` chunk on a 2-core
CPU, a 4x slower chunk than its separately jitted stages (benchmarks/RESULTS.md, "The pixel chunk's gap").
`conv_nhwc` computes the same gradients as NHWC/HWIO convolutions of explicitly transposed operands,
which run fast in every computation. Its forward pass is `lax.conv_general_dilated` itself.

Under `jax.vmap` (seeds trained in one program) JAX batches a convolution whose kernel is batched too into a
grouped convolution, which XLA:CPU also runs slowly (two pixel seeds cost 3.5x two sequential runs);
here the seeds' convolutions are separate ones instead (`_plain_conv`'s batching rule).

GPU compilers rewrite convolutions in every computation (and cuDNN recognises JAX's own gradient
convolutions), so `conv_general_dilated` uses this path on the CPU backend only. Its limits there: reverse-mode
gradients only (no `jax.jvp`/`jacfwd`, no gradient of a gradient), which is all that training takes; and S
vmapped entries that each have their own input and kernel (seeds) give S convolutions, unrolled.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], ...]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated`'s signature (flax's `nn.Conv(conv_general_dilated=...)`): `conv_nhwc` for
    the plain 2-D NHWC convolutions of ezv's networks on the CPU backend, lax's own otherwise."""
    plain = (
        jax.default_backend() == "cpu" and lhs.ndim == 4 and feature_group_count == 1 and not kwargs
        and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and _is_nhwc(dimension_numbers, lhs.ndim)
    )
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return conv_nhwc(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
    if dimension_numbers is None:  # lax's default is NCHW/OIHW
        return False
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return dn == lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_nhwc(x: jax.Array, w: jax.Array, strides: Sequence[int], pads: Pads, precision: Any = None):
    """x [B, H, W, Ci] (*) w [kh, kw, Ci, Co] -> [B, H', W', Co], explicit padding per spatial dim."""
    return _plain_conv(x, w, strides, pads, precision=precision)


def _plain_conv(x, w, strides, pads, lhs_dilation=(1, 1), rhs_dilation=(1, 1), precision=None):
    """An NHWC/HWIO convolution that stays one under `jax.vmap`: a batched input alone joins the batch, a
    batched kernel gives one convolution per batch entry (never a grouped convolution)."""
    return _batchable_conv(tuple(strides), tuple(pads), tuple(lhs_dilation), tuple(rhs_dilation), precision)(x, w)


@functools.lru_cache(maxsize=None)
def _batchable_conv(strides, pads, lhs_dilation, rhs_dilation, precision):
    @jax.custom_batching.custom_vmap
    def conv(x, w):
        return lax.conv_general_dilated(x, w, strides, pads, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                        dimension_numbers=NHWC, precision=precision)

    @conv.def_vmap
    def rule(axis_size, in_batched, x, w):
        x_batched, w_batched = in_batched
        if not w_batched:  # [S, B, ...] -> [S * B, ...]: one convolution over every entry's batch
            y = conv(x.reshape((-1,) + x.shape[2:]), w)
            return y.reshape((axis_size, -1) + y.shape[1:]), True
        if not x_batched:  # [S, kh, kw, Ci, Co] -> [kh, kw, Ci, S * Co]: one convolution, outputs side by side
            y = conv(x, jnp.moveaxis(w, 0, -2).reshape(w.shape[1:-1] + (-1,)))
            return jnp.moveaxis(y.reshape(y.shape[:-1] + (axis_size, -1)), -2, 0), True
        # Both batched (seeds: their own data and parameters): one convolution per entry, unrolled.
        return jnp.stack([conv(x[i], w[i]) for i in range(axis_size)]), True

    return conv


def _forward(x, w, strides, pads, precision):
    return _plain_conv(x, w, strides, pads, precision=precision), (x, w)


def _backward(strides, pads, precision, residuals, dy):
    x, w = residuals
    return input_gradient(dy, w, x, strides, pads, precision), kernel_gradient(x, dy, w, strides, pads, precision)


conv_nhwc.defvjp(_forward, _backward)


def input_gradient(dy, w, x, strides, pads, precision=None):
    """dL/dx: dy dilated by the stride, convolved with the kernel flipped in space and with its in/out
    channels swapped (an HWIO kernel again), padded so that the output is x's size."""
    in_size, kernel, out_size = x.shape[1:3], w.shape[:2], dy.shape[1:3]
    dx_pads = tuple(
        (k - 1 - lo, n + lo - (m - 1) * s - 1)
        for n, k, m, s, (lo, _) in zip(in_size, kernel, out_size, strides, pads)
    )
    w_t = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
    dx = _plain_conv(dy, w_t, (1, 1), dx_pads, lhs_dilation=strides, precision=precision)
    return dx.astype(x.dtype)


def kernel_gradient(x, dy, w, strides, pads, precision=None):
    """dL/dw[p, q, ci, co] = sum over b, i, j of x_padded[b, s*i + p, s*j + q, ci] * dy[b, i, j, co]: a
    convolution of x with channels as its batch and the batch as its features ([Ci, H, W, B]) by dy as
    the kernel ([H', W', B, Co], dilated by the stride), whose [Ci, kh, kw, Co] output is transposed back."""
    in_size, kernel, out_size = x.shape[1:3], w.shape[:2], dy.shape[1:3]
    dw_pads = tuple(
        (lo, k - n - lo + (m - 1) * s)
        for n, k, m, s, (lo, _) in zip(in_size, kernel, out_size, strides, pads)
    )
    dw = _plain_conv(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), dw_pads,
                     rhs_dilation=strides, precision=precision)
    return jnp.transpose(dw, (1, 2, 0, 3)).astype(w.dtype)
