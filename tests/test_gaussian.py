"""The squashed-Gaussian policy of continuous control (`ezv.gaussian`): its head, log-density,
samples, entropy estimate, and the map onto the env's action bounds."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from ezv import gaussian


def test_the_policy_head_starts_at_mean_0_and_std_softplus_1_plus_0_1():
    mean, std = gaussian.mean_and_std(jnp.zeros((3, 4)))
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(std, np.log1p(np.e) + 0.1, rtol=1e-6)
    mean, _ = gaussian.mean_and_std(jnp.array([[100.0, -100.0, 0.0, 0.0]]))
    np.testing.assert_allclose(mean, [[5.0, -5.0]], rtol=1e-5)  # μ = 5·tanh(μ_raw/5) saturates at ±5


def test_log_prob_matches_the_derivative_of_the_squashed_cdf():
    # P(a <= x) = Φ((atanh x − μ)/σ); its numerical derivative is the density of a = tanh(u).
    outputs = jnp.array([[0.7, -0.3]])  # one dimension: raw mean 0.7, raw std -0.3
    mean, std = gaussian.mean_and_std(outputs)
    xs = jnp.linspace(-0.99, 0.99, 41)
    eps = 1e-4
    cdf = lambda x: norm.cdf((jnp.arctanh(x) - mean[0, 0]) / std[0, 0])  # noqa: E731
    numeric = (cdf(xs + eps) - cdf(xs - eps)) / (2 * eps)
    analytic = jnp.exp(gaussian.log_prob(outputs, xs[:, None][None]))[0]
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=1e-5)


def test_log_prob_of_a_vector_is_the_sum_over_independent_dimensions():
    outputs = jax.random.normal(jax.random.PRNGKey(0), (2, 6))  # three dimensions
    actions = gaussian.sample(jax.random.PRNGKey(1), outputs, 5)
    joint = gaussian.log_prob(outputs, actions)
    per_dim = sum(
        gaussian.log_prob(outputs[:, [d, 3 + d]], actions[..., d : d + 1]) for d in range(3)
    )
    np.testing.assert_allclose(joint, per_dim, rtol=1e-5)


def test_samples_stay_inside_the_clip_and_the_entropy_estimate_is_close_to_exact_in_1d():
    outputs = jnp.array([[0.2, 0.5]])
    samples = gaussian.sample(jax.random.PRNGKey(0), outputs, 10_000, std_scale=3.0)
    assert (jnp.abs(samples) <= gaussian.ACTION_CLIP).all()
    # Exact entropy by quadrature over u: H = −∫ N(u) log p(tanh u) du.
    mean, std = gaussian.mean_and_std(outputs)
    u = jnp.linspace(-12, 12, 20001)
    density_u = norm.pdf(u, mean[0, 0], std[0, 0])
    a = jnp.clip(jnp.tanh(u), -gaussian.ACTION_CLIP, gaussian.ACTION_CLIP)
    exact = -jnp.trapezoid(density_u * gaussian.log_prob(outputs, a[:, None][None])[0], u)
    estimate = gaussian.entropy_estimate(jax.random.PRNGKey(3), outputs, 200_000)[0]
    np.testing.assert_allclose(estimate, exact, atol=0.01)


def test_policy_actions_map_onto_the_env_bounds():
    low, high = (-2.0, 0.0), (2.0, 1.0)
    out = gaussian.to_env(jnp.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]), low, high)
    np.testing.assert_allclose(out, [[-2.0, 0.0], [0.0, 0.5], [2.0, 1.0]])
