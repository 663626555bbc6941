"""The EZ-V2 loss (`ezv.losses.ez_loss`, reference §5) on a tiny batch computed by hand in numpy:

    L = (1/K) · mean_b w_b [ Σ_{k=0..K} (m_k c_v CE_v + p_k c_π ℓ_π − p_k c_H Ĥ) + Σ_{k=1..K} m_k (c_r CE_r + c_c ℓ_c) ]

with m the unroll mask, p the policy mask (the unroll mask without terminal states) and w the PER weights.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ezv.config import LearnerConfig
from ezv.losses import Targets, Unroll, ez_loss
from ezv.supports import Support

B, K, A, D = 2, 2, 3, 4
VALUE_SUPPORT = Support(5, 2.0)  # atoms -2, -1, 0, 1, 2 in h-space
REWARD_SUPPORT = Support(3, 1.0)  # atoms -1, 0, 1 in h-space
CFG = LearnerConfig(unroll_steps=K, value_coef=0.25, policy_coef=1.5, reward_coef=0.7, consistency_coef=2.0)
WEIGHTS = np.array([1.0, 0.5], np.float32)

# Sample 0 runs through the whole unroll. Sample 1's episode ends at position 1 (a terminal state):
# position 2 lies past the end (unroll mask 0), and position 1 keeps its value but not its policy.
MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)
POLICY_MASK = np.array([[1, 1, 1], [1, 0, 0]], bool)


# --- the formula in numpy ---------------------------------------------------------------


def np_h(x):
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0) + 1e-3 * x


def np_two_hot(x, support):
    """Triangular interpolation of h(x) between the two nearest atoms (clipped to the support's ends)."""
    atoms = np.linspace(-support.h_max, support.h_max, support.bins)
    spacing = atoms[1] - atoms[0]
    y = np.clip(np_h(np.asarray(x, np.float64)), -support.h_max, support.h_max)
    return np.maximum(0.0, 1.0 - np.abs(y[..., None] - atoms) / spacing)


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_cross_entropy(logits, target_probs):
    return -(target_probs * np_log_softmax(logits)).sum(-1)


def np_negative_cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return -(a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --- the tiny batch -----------------------------------------------------------------------


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    out = dict(
        policy_logits=rng.normal(size=(B, K + 1, A)).astype(np.float32),
        value_logits=rng.normal(size=(B, K + 1, VALUE_SUPPORT.bins)).astype(np.float32),
        reward_logits=rng.normal(size=(B, K, REWARD_SUPPORT.bins)).astype(np.float32),
        projection=rng.normal(size=(B, K, D)).astype(np.float32),
    )
    tgt = dict(
        value=np.array([[0.5, -1.2, 3.0], [2.0, 0.0, 7.0]], np.float32),
        reward=np.array([[1.0, 0.3], [-0.4, 2.5]], np.float32),
        policy=np.array(
            [[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]],
             [[0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.0, 0.0, 0.0]]], np.float32),
        projection=rng.normal(size=(B, K, D)).astype(np.float32),
        mask=MASK.copy(),
        policy_mask=POLICY_MASK.copy(),
    )
    return out, tgt


def to_jax(out, tgt):
    return (Unroll(**{k: jnp.asarray(v) for k, v in out.items()}),
            Targets(**{k: jnp.asarray(v) for k, v in tgt.items()}))


def loss_of(out, tgt, weights=WEIGHTS, cfg=CFG, **kwargs):
    o, t = to_jax(out, tgt)
    loss, metrics = ez_loss(o, t, jnp.asarray(weights), cfg, VALUE_SUPPORT, REWARD_SUPPORT, **kwargs)
    return float(loss), {k: float(v) for k, v in metrics.items()}


def hand_terms(out, tgt):
    """[B] masked sums over the unroll of each term, uncoefficiented and unweighted."""
    m, p = tgt["mask"].astype(np.float64), tgt["policy_mask"].astype(np.float64)
    value = np_cross_entropy(out["value_logits"], np_two_hot(tgt["value"], VALUE_SUPPORT)) * m
    policy = np_cross_entropy(out["policy_logits"], tgt["policy"]) * p
    reward = np_cross_entropy(out["reward_logits"], np_two_hot(tgt["reward"], REWARD_SUPPORT)) * m[:, 1:]
    consistency = np_negative_cosine(out["projection"], tgt["projection"]) * m[:, 1:]
    return dict(value=value.sum(1), policy=policy.sum(1), reward=reward.sum(1), consistency=consistency.sum(1))


def hand_loss(out, tgt, weights=WEIGHTS, cfg=CFG):
    t = hand_terms(out, tgt)
    per_sample = (cfg.value_coef * t["value"] + cfg.policy_coef * t["policy"] + cfg.reward_coef * t["reward"]
                  + cfg.consistency_coef * t["consistency"])
    return float(np.mean(weights * per_sample) / cfg.unroll_steps)


# --- discrete ---------------------------------------------------------------------------


def test_loss_equals_the_hand_computed_formula_on_a_tiny_batch():
    out, tgt = make_batch()
    loss, _ = loss_of(out, tgt)
    assert loss == pytest.approx(hand_loss(out, tgt), rel=1e-5)


def test_two_hot_targets_of_the_hand_computation_are_exact_on_known_points():
    # The numpy two-hot the expectations rely on: h(3) = 1.003 lies 0.003 of the way from atom 1 to atom 2,
    # h(0) = 0 is the middle atom, and targets beyond the support clip to its end.
    np.testing.assert_allclose(np_two_hot(np.array([3.0, 0.0, 1e6]), VALUE_SUPPORT),
                               [[0, 0, 0, 0.997, 0.003], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], atol=1e-9)


def test_positions_past_the_episode_end_contribute_nothing():
    out, tgt = make_batch()
    garbage_out = {k: v.copy() for k, v in out.items()}
    garbage_tgt = {k: v.copy() for k, v in tgt.items()}
    # Sample 1, position 2 (past the end): wild predictions and targets for every head.
    garbage_out["value_logits"][1, 2] = [50.0, -50.0, 0.0, 30.0, -20.0]
    garbage_out["policy_logits"][1, 2] = [40.0, -40.0, 0.0]
    garbage_out["reward_logits"][1, 1] = [-30.0, 30.0, 10.0]  # reward k=2 is the step into position 2
    garbage_out["projection"][1, 1] = -tgt["projection"][1, 1]
    garbage_tgt["value"][1, 2] = -100.0
    garbage_tgt["reward"][1, 1] = 1e3
    garbage_tgt["policy"][1, 2] = [0.0, 1.0, 0.0]
    assert loss_of(garbage_out, garbage_tgt)[0] == pytest.approx(loss_of(out, tgt)[0], rel=1e-6)

    grads = jax.grad(lambda o: ez_loss(o, to_jax(out, tgt)[1], jnp.asarray(WEIGHTS), CFG, VALUE_SUPPORT,
                                       REWARD_SUPPORT)[0])(to_jax(out, tgt)[0])
    np.testing.assert_array_equal(grads.value_logits[1, 2], 0.0)
    np.testing.assert_array_equal(grads.policy_logits[1, 2], 0.0)
    np.testing.assert_array_equal(grads.reward_logits[1, 1], 0.0)
    np.testing.assert_array_equal(grads.projection[1, 1], 0.0)
    # ... while the unmasked positions do get gradient.
    assert np.abs(grads.value_logits[1, 1]).sum() > 0 and np.abs(grads.reward_logits[1, 0]).sum() > 0


def test_policy_loss_is_masked_at_a_terminal_state_while_its_value_still_counts():
    out, tgt = make_batch()
    changed = {k: v.copy() for k, v in out.items()}
    changed["policy_logits"][1, 1] = [25.0, -25.0, 3.0]  # sample 1's terminal position
    assert loss_of(changed, tgt)[0] == pytest.approx(loss_of(out, tgt)[0], rel=1e-6)

    changed = {k: v.copy() for k, v in out.items()}
    changed["value_logits"][1, 1] += np.array([5.0, -5.0, 0.0, 0.0, 0.0], np.float32)
    assert loss_of(changed, tgt)[0] != pytest.approx(loss_of(out, tgt)[0], rel=1e-3)

    # Lifting the terminal mark adds exactly that position's policy cross-entropy (x c_π w_1 / (B K)).
    unmasked = dict(tgt, policy_mask=tgt["policy_mask"] | np.array([[0, 0, 0], [0, 1, 0]], bool))
    ce = np_cross_entropy(out["policy_logits"][1, 1], tgt["policy"][1, 1])
    expected = CFG.policy_coef * WEIGHTS[1] * ce / (B * K)
    assert loss_of(out, unmasked)[0] - loss_of(out, tgt)[0] == pytest.approx(expected, rel=1e-4)


def test_importance_weights_multiply_each_sample_and_the_batch_mean_divides_by_the_batch_size():
    out, tgt = make_batch()
    t = hand_terms(out, tgt)
    per_sample = (CFG.value_coef * t["value"] + CFG.policy_coef * t["policy"] + CFG.reward_coef * t["reward"]
                  + CFG.consistency_coef * t["consistency"])
    for weights in ([1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [3.0, 0.25]):
        weights = np.array(weights, np.float32)
        expected = (weights[0] * per_sample[0] + weights[1] * per_sample[1]) / (B * K)
        assert loss_of(out, tgt, weights=weights)[0] == pytest.approx(expected, rel=1e-5), weights


def test_the_whole_loss_including_position_zero_is_divided_by_the_unroll_length():
    out, tgt = make_batch()
    # Only position 0 valid: the loss is its value and policy terms, still divided by K (not by the count).
    only_first = dict(tgt, mask=np.array([[1, 0, 0], [1, 0, 0]], bool),
                      policy_mask=np.array([[1, 0, 0], [1, 0, 0]], bool))
    value0 = np_cross_entropy(out["value_logits"][:, 0], np_two_hot(tgt["value"][:, 0], VALUE_SUPPORT))
    policy0 = np_cross_entropy(out["policy_logits"][:, 0], tgt["policy"][:, 0])
    expected = np.mean(WEIGHTS * (CFG.value_coef * value0 + CFG.policy_coef * policy0)) / K
    assert loss_of(out, only_first)[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("term", ["value", "policy", "reward", "consistency"])
def test_each_loss_coefficient_scales_only_its_own_term(term):
    out, tgt = make_batch()
    alone = LearnerConfig(unroll_steps=K, value_coef=0.0, policy_coef=0.0, reward_coef=0.0, consistency_coef=0.0)
    alone = dataclasses.replace(alone, **{f"{term}_coef": 3.0})
    expected = 3.0 * np.mean(WEIGHTS * hand_terms(out, tgt)[term]) / K
    assert abs(expected) > 1e-3
    assert loss_of(out, tgt, cfg=alone)[0] == pytest.approx(expected, rel=1e-5)


def test_metrics_are_unweighted_batch_means_of_each_masked_term():
    out, tgt = make_batch()
    loss, metrics = loss_of(out, tgt)
    t = hand_terms(out, tgt)
    assert metrics["loss"] == pytest.approx(loss)
    for term in ("value", "policy", "reward", "consistency"):
        assert metrics[f"{term}_loss"] == pytest.approx(float(t[term].mean()), rel=1e-5), term


def test_consistency_term_is_the_negative_cosine_similarity_whatever_the_scales():
    out, tgt = make_batch()
    out["projection"][:] = 0.0
    tgt["projection"][:] = 0.0
    out["projection"][:, :, 0] = 7.0  # direction (1, 0, 0, 0)
    tgt["projection"][:, 0, :2] = [0.5, 0.5]  # 45 degrees: cos = 1/√2
    tgt["projection"][:, 1, 0] = -3.0  # opposite: cos = -1
    metrics = loss_of(out, tgt)[1]
    # Sample 0 has both steps (−1/√2 + 1), sample 1 only the first (−1/√2).
    assert metrics["consistency_loss"] == pytest.approx(((-1 / np.sqrt(2) + 1) + (-1 / np.sqrt(2))) / 2, rel=1e-5)


def test_a_zero_projection_gives_a_finite_consistency_gradient():
    """‖x‖ has a NaN gradient at 0: one all-zero projection must not turn the parameters NaN."""
    from ezv.losses import negative_cosine

    def loss(a):
        return jnp.sum(negative_cosine(a, jnp.ones_like(a)))

    grad = np.asarray(jax.grad(loss)(jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])))
    assert np.isfinite(grad).all() and (grad[0] == 0).all() and np.abs(grad[1]).max() < 1
    np.testing.assert_allclose(loss(jnp.array([[1.0, 2.0, 2.0]])), -5 / (3 * np.sqrt(3)), rtol=1e-6)


def test_no_gradient_flows_into_the_targets():
    out, tgt = make_batch()
    o, t = to_jax(out, tgt)
    grads = jax.grad(lambda t: ez_loss(o, t, jnp.asarray(WEIGHTS), CFG, VALUE_SUPPORT, REWARD_SUPPORT)[0],
                     allow_int=True)(t.replace(mask=t.mask.astype(jnp.float32),
                                               policy_mask=t.policy_mask.astype(jnp.float32)))
    np.testing.assert_array_equal(grads.policy, 0.0)
    np.testing.assert_array_equal(grads.projection, 0.0)


# --- continuous (squashed-Gaussian policy) -------------------------------------------------

DIM, NUM_CANDIDATES = 2, 3


def np_mean_std(raw):
    raw = np.asarray(raw, np.float64)
    mean_raw, std_raw = raw[..., :DIM], raw[..., DIM:]
    return 5.0 * np.tanh(mean_raw / 5.0), np.log1p(np.exp(std_raw + 1.0)) + 0.1


def np_log_prob(raw, actions):
    """log p(a) under tanh(N(μ, σ²)): Σ_d log N(atanh a_d; μ_d, σ_d) − log(1 − a_d²). actions [..., N, DIM]."""
    mean, std = np_mean_std(raw)
    a = np.asarray(actions, np.float64)
    u = np.arctanh(a)
    z = (u - mean[..., None, :]) / std[..., None, :]
    log_normal = -0.5 * z**2 - np.log(std[..., None, :]) - 0.5 * np.log(2 * np.pi)
    return (log_normal - np.log(1.0 - a**2)).sum(-1)


def np_entropy(raw):
    """−E[log p(a)] by quadrature over u ~ N(μ, σ²) (a = tanh u clipped to ±0.999, as the samples are)."""
    mean, std = np_mean_std(raw)
    total = 0.0
    for d in range(DIM):
        u = np.linspace(mean[d] - 12 * std[d], mean[d] + 12 * std[d], 200_001)
        density = np.exp(-0.5 * ((u - mean[d]) / std[d]) ** 2) / (std[d] * np.sqrt(2 * np.pi))
        a = np.clip(np.tanh(u), -0.999, 0.999)
        z = (np.arctanh(a) - mean[d]) / std[d]
        log_p = -0.5 * z**2 - np.log(std[d]) - 0.5 * np.log(2 * np.pi) - np.log(1.0 - a**2)
        total += -np.sum(density * log_p) * (u[1] - u[0])
    return total


def make_continuous_batch():
    out, tgt = make_batch()
    rng = np.random.default_rng(1)
    out["policy_logits"] = (0.5 * rng.normal(size=(B, K + 1, 2 * DIM))).astype(np.float32)
    tgt["candidates"] = rng.uniform(-0.9, 0.9, size=(B, K + 1, NUM_CANDIDATES, DIM)).astype(np.float32)
    tgt["policy"] = np.array([[[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]],
                              [[0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0]]], np.float32)
    tgt["chosen"] = tgt["candidates"][:, :, 1]
    return out, tgt


def hand_loss_with_policy(out, tgt, policy_per_position):
    """The formula with the discrete policy term replaced by `policy_per_position` [B, K+1] (unmasked)."""
    discrete = dict(out, policy_logits=np.zeros((B, K + 1, A), np.float32))
    discrete_free = hand_terms(discrete, dict(tgt, policy=np.zeros((B, K + 1, A), np.float32)))
    policy = (policy_per_position * tgt["policy_mask"]).sum(1)
    per_sample = (CFG.value_coef * discrete_free["value"] + CFG.policy_coef * policy
                  + CFG.reward_coef * discrete_free["reward"] + CFG.consistency_coef * discrete_free["consistency"])
    return float(np.mean(WEIGHTS * per_sample) / K)


def test_continuous_full_policy_loss_is_the_search_weighted_log_likelihood_of_the_candidates():
    out, tgt = make_continuous_batch()
    ell = -(tgt["policy"] * np_log_prob(out["policy_logits"], tgt["candidates"])).sum(-1)
    loss, _ = loss_of(out, tgt, continuous_loss="full")
    assert loss == pytest.approx(hand_loss_with_policy(out, tgt, ell), rel=1e-4)


def test_continuous_simple_policy_loss_is_the_negative_log_likelihood_of_the_chosen_action():
    out, tgt = make_continuous_batch()
    ell = -np_log_prob(out["policy_logits"], tgt["chosen"][:, :, None, :])[..., 0]
    loss, _ = loss_of(out, tgt, continuous_loss="simple")
    assert loss == pytest.approx(hand_loss_with_policy(out, tgt, ell), rel=1e-4)


def test_continuous_policy_loss_is_masked_at_terminal_and_past_end_positions():
    out, tgt = make_continuous_batch()
    changed = {k: v.copy() for k, v in out.items()}
    changed["policy_logits"][1, 1:] = [3.0, -3.0, 4.0, -2.0]  # sample 1: terminal and past-the-end positions
    for kind in ("full", "simple"):
        assert loss_of(changed, tgt, continuous_loss=kind)[0] == pytest.approx(
            loss_of(out, tgt, continuous_loss=kind)[0], rel=1e-6), kind


def test_entropy_bonus_subtracts_the_coefficient_times_the_policy_entropy_at_unmasked_positions():
    out, tgt = make_continuous_batch()
    coef, samples = 0.5, 65536
    cfg = dataclasses.replace(CFG, entropy_coef=coef, entropy_samples=samples)
    entropy = np.array([[np_entropy(out["policy_logits"][b, k]) for k in range(K + 1)] for b in range(B)])
    masked = (entropy * tgt["policy_mask"]).sum(1)
    key = jax.random.PRNGKey(0)
    with_bonus, metrics = loss_of(out, tgt, cfg=cfg, continuous_loss="full", entropy_key=key)
    without, _ = loss_of(out, tgt, continuous_loss="full", entropy_key=key)
    # The Monte-Carlo estimate (64k samples per position) against quadrature.
    assert with_bonus - without == pytest.approx(-coef * np.mean(WEIGHTS * masked) / K, rel=0.03, abs=2e-3)
    assert metrics["policy_entropy"] == pytest.approx(masked.sum() / tgt["policy_mask"].sum(), rel=0.03)
    # The bonus is absent with a zero coefficient (the discrete default).
    assert "policy_entropy" not in loss_of(out, tgt, continuous_loss="full", entropy_key=key)[1]
