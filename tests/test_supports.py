"""Categorical supports: the h transform, two-hot encoding and decoding."""

import jax.numpy as jnp
import numpy as np
import pytest

from ezv.supports import Support, h, h_inv

VALUES = jnp.array([-5000.0, -299.0, -7.3, -1.0, -0.2, 0.0, 0.2, 1.0, 7.3, 299.0, 5000.0])


def test_h_is_odd_and_inverted_exactly_including_negatives():
    np.testing.assert_allclose(h(-VALUES), -h(VALUES), rtol=1e-6)
    np.testing.assert_allclose(h_inv(h(VALUES)), VALUES, rtol=1e-5, atol=1e-4)
    # The linear term keeps its sign for negatives (the reference's encoder flips it).
    assert float(h(jnp.float32(-100.0))) == pytest.approx(-(np.sqrt(101.0) - 1.0) - 0.1, rel=1e-6)


def test_reference_support_ranges():
    assert float(h(jnp.float32(299.0))) == pytest.approx(16.62, abs=0.01)  # DMC value range
    assert float(h(jnp.float32(2.0))) == pytest.approx(0.734, abs=0.001)  # DMC reward range
    atari = Support(601, 300.0)
    np.testing.assert_allclose(atari.atoms[:3], [-300.0, -299.0, -298.0])


@pytest.mark.parametrize("support", [Support(601, 300.0), Support.covering(51, 299.0), Support(21, 5.0)])
def test_two_hot_round_trip(support):
    x = jnp.clip(VALUES, -h_inv(jnp.float32(support.h_max)), h_inv(jnp.float32(support.h_max)))
    probs = support.encode(x)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert int((probs > 0).sum(-1).max()) <= 2
    decoded = support.decode(jnp.log(probs + 1e-30))
    np.testing.assert_allclose(decoded, x, rtol=1e-4, atol=1e-3)


def test_targets_beyond_the_support_are_clipped_to_its_ends():
    s = Support(21, 5.0)
    probs = s.encode(jnp.array([1e9, -1e9]))
    np.testing.assert_allclose(probs[0, -1], 1.0)
    np.testing.assert_allclose(probs[1, 0], 1.0)


def test_cross_entropy_is_minimised_by_the_encoded_target():
    s = Support(51, 10.0)
    target = jnp.array([3.7])
    best = s.cross_entropy(jnp.log(s.encode(target) + 1e-30), target)
    other = s.cross_entropy(jnp.log(s.encode(jnp.array([1.0])) + 1e-30), target)
    assert float(best[0]) < float(other[0])
