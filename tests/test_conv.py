"""The networks' convolutions (ezv/conv.py): JAX's gradients, computed by convolutions that XLA:CPU runs
with its fast kernels inside the training loop."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from tiny import tiny_pixel_network

from ezv.conv import conv_general_dilated
from ezv.networks import EZNet

NHWC = ("NHWC", "HWIO", "NHWC")
KEY = jax.random.PRNGKey(0)


def conv_labels(compiled) -> set[str]:
    """The layouts (`dim_labels`) of every convolution in a compiled program."""
    return set(re.findall(r"convolution\(.*?dim_labels=([^ ,]+)", compiled.as_text()))


@pytest.mark.parametrize("size, kernel, stride, padding, dtype", [
    (16, (3, 3), (1, 1), ((1, 1), (1, 1)), jnp.float32),   # a residual block's conv
    (16, (3, 3), (2, 2), ((1, 1), (1, 1)), jnp.float32),   # the strided convs of the representation
    (15, (3, 3), (2, 2), ((1, 1), (1, 1)), jnp.float32),   # width 16: the last column of padding is never read
    (7, (1, 1), (1, 1), "SAME", jnp.float32),              # the 1x1 convs of the heads and the action embedding
    (9, (3, 3), (2, 2), "SAME", jnp.float32),
    (10, (3, 3), (2, 2), "VALID", jnp.float32),
    (9, (1, 1), (2, 2), ((1, 1), (1, 1)), jnp.float32),   # padding wider than the kernel
    (11, (3, 2), (2, 3), ((2, 0), (0, 3)), jnp.float32),  # rectangular, asymmetric
    (8, (3, 3), (1, 1), ((1, 1), (1, 1)), jnp.bfloat16),   # --network.compute-dtype bfloat16
])
def test_the_convolution_and_its_gradients_are_lax_convolutions(size, kernel, stride, padding, dtype):
    kx, kw, kg = jax.random.split(jax.random.fold_in(KEY, size * 10 + stride[0]), 3)
    x = jax.random.normal(kx, (2, size, size + 1, 3), dtype)
    w = jax.random.normal(kw, (*kernel, 3, 5), dtype)

    def value_and_grads(conv):
        def loss(x, w):
            y = conv(x, w, stride, padding, dimension_numbers=NHWC)
            return jnp.sum(y.astype(jnp.float32) * jax.random.normal(kg, y.shape)), y
        (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(x, w)
        return y, grads

    y_lax, (dx_lax, dw_lax) = value_and_grads(lax.conv_general_dilated)
    y, (dx, dw) = value_and_grads(conv_general_dilated)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_lax, np.float32))  # the same forward op
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    for ours, theirs in [(dx, dx_lax), (dw, dw_lax)]:
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32),
                                   rtol=tol, atol=tol * float(jnp.max(jnp.abs(theirs.astype(jnp.float32)))))


@pytest.mark.parametrize("batched", ["input", "kernel", "both"])
def test_under_vmap_each_entry_gets_the_gradients_it_gets_alone(batched):
    # Seeds trained in one program: a batched kernel must not mix the seeds (the rule runs one convolution
    # per seed instead of lax's grouped one).
    kx, kw = jax.random.split(KEY)
    xs = jax.random.normal(kx, (3, 2, 9, 9, 4))
    ws = jax.random.normal(kw, (3, 3, 3, 4, 5))
    x_axis, w_axis = {"input": (0, None), "kernel": (None, 0), "both": (0, 0)}[batched]
    x_in, w_in = (xs if x_axis == 0 else xs[0]), (ws if w_axis == 0 else ws[0])

    def loss(x, w):
        return jnp.sum(jnp.sin(conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC)))

    grads = jax.grad(loss, (0, 1))

    dx, dw = jax.jit(jax.vmap(grads, in_axes=(x_axis, w_axis)))(x_in, w_in)
    if batched == "input":  # through the vmap: the kernel's gradient of the entries' summed loss
        total = jax.grad(lambda w: jnp.sum(jax.vmap(lambda x: loss(x, w))(xs)))(ws[0])
        np.testing.assert_allclose(total, jnp.sum(dw, axis=0), rtol=1e-5, atol=1e-5)
    for i in range(3):
        alone = grads(xs[i] if x_axis == 0 else xs[0], ws[i] if w_axis == 0 else ws[0])
        np.testing.assert_allclose(dx[i], alone[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dw[i], alone[1], rtol=1e-5, atol=1e-5)


def test_inside_a_scan_every_gradient_convolution_has_the_layout_of_the_fast_cpu_kernels():
    # The pixel network's gradient step inside a `lax.scan` body, for two seeds vmapped, as the training
    # chunk runs it: XLA:CPU rewrites other layouts for its fast kernels in the entry computation only, so
    # there a convolution of another layout would run as a naive loop (62 of 95 s of a pixel chunk before
    # ezv/conv.py), and a grouped one (lax's batching of per-seed kernels) slowly too.
    cfg = tiny_pixel_network()
    net = EZNet(cfg, num_actions=None, action_dim=2)
    # 64x64 frames, a 4x4 latent as in the preset (XLA reshapes the convs of a 2x2 latent on its own).
    obs, action = jnp.zeros((2, 64, 64, 12), jnp.uint8), jnp.zeros((2, 2))
    variables = net.init(KEY, obs, action)

    def loss(params):
        latent, _ = net.apply({**variables, "params": params}, obs, train=True, method=net.represent,
                              mutable=["batch_stats"])
        latent = net.apply({**variables, "params": params}, latent, action, method=net.next_state)
        return jnp.sum(latent ** 2)

    def step(params, _):
        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), None

    seeds = jax.tree.map(lambda p: jnp.stack([p, p + 0.01]), variables["params"])
    train = jax.vmap(lambda p: lax.scan(step, p, None, length=2)[0])
    compiled = jax.jit(train).lower(seeds).compile()
    if jax.default_backend() == "cpu":
        assert conv_labels(compiled) == {"b01f_01io->b01f"}
        assert "feature_group_count" not in compiled.as_text()
