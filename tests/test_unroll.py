"""The learner's forward pass `EZNet.unroll` (reference §5) on a tiny MLP network: its shapes, that it is
the composition represent → dynamics^k → heads, the ×0.5 gradient on every unrolled latent, the
stop-gradient SimSiam targets, and the value-prefix LSTM reset every `lstm_horizon` steps."""

import jax
import jax.numpy as jnp
import numpy as np

from ezv.config import NetworkConfig
from ezv.networks import EZNet, initial_lstm_carry

B, K, OBS, NUM_ACTIONS, HORIZON = 2, 4, 5, 3, 2
CFG = NetworkConfig(
    architecture="mlp", latent_dim=8, mlp_hidden=16, mlp_blocks=1, mlp_head_hidden=(16,), action_embedding=4,
    normalize_obs=False, value_prefix=True, lstm_hidden=8, lstm_horizon=HORIZON, value_bins=5, value_h_max=2.0,
    reward_bins=7, reward_h_max=1.0, projection_hidden=16, projection_dim=6, predictor_hidden=16,
)
NET = EZNet(CFG, num_actions=NUM_ACTIONS)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32)
    actions = jnp.asarray(rng.integers(0, NUM_ACTIONS, size=(B, K)), jnp.int32)
    next_obs = jnp.asarray(rng.normal(size=(B, K, OBS)), jnp.float32)
    return obs, actions, next_obs


def perturbed_variables(seed=0):
    """Initial variables with every parameter moved off its init (the policy and reward output layers start
    at zero, which would make those heads constant)."""
    variables = NET.init(jax.random.PRNGKey(seed), jnp.zeros((1, OBS)), jnp.zeros((1,), jnp.int32))
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return {"params": params, "batch_stats": variables["batch_stats"]}


VARIABLES = perturbed_variables()


def unroll(variables, obs, actions, next_obs):
    return NET.apply(variables, obs, actions, next_obs, train=False, method=EZNet.unroll)


def composed(variables, obs, actions, reset_every=HORIZON):
    """The same outputs from the network's own one-step functions, with no gradient scaling:
    (latents [K+1], policies [K+1], values [K+1], rewards [K], predicted projections [K]) as lists."""
    state = NET.apply(variables, obs, method=EZNet.represent)
    policy, value = NET.apply(variables, state, method=EZNet.predict)
    latents, policies, values, rewards, projections = [state], [policy], [value], [], []
    carry = initial_lstm_carry(CFG, B)
    for k in range(actions.shape[1]):
        if reset_every and k % reset_every == 0:
            carry = initial_lstm_carry(CFG, B)
        state, carry, reward = NET.apply(variables, state, actions[:, k], carry, method=EZNet.dynamics)
        policy, value = NET.apply(variables, state, method=EZNet.predict)
        latents.append(state)
        policies.append(policy)
        values.append(value)
        rewards.append(reward)
        projections.append(NET.apply(variables, state, predict=True, method=EZNet.project))
    return latents, policies, values, rewards, projections


def test_unroll_returns_k_plus_one_predictions_and_k_rewards_and_projections():
    obs, actions, next_obs = inputs()
    policy, value, reward, projection, target = unroll(VARIABLES, obs, actions, next_obs)
    assert policy.shape == (B, K + 1, NUM_ACTIONS)
    assert value.shape == (B, K + 1, CFG.value_bins)
    assert reward.shape == (B, K, CFG.reward_bins)
    assert projection.shape == (B, K, CFG.projection_dim)
    assert target.shape == (B, K, CFG.projection_dim)


def test_continuous_unroll_returns_two_gaussian_parameters_per_action_dimension():
    net = EZNet(CFG, num_actions=None, action_dim=2)
    obs, _, next_obs = inputs()
    actions = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(B, K, 2)), jnp.float32)
    variables = net.init(jax.random.PRNGKey(0), obs, actions[:, 0])
    policy, value, reward, projection, target = net.apply(variables, obs, actions, next_obs, train=False,
                                                          method=EZNet.unroll)
    assert policy.shape == (B, K + 1, 4)
    assert value.shape == (B, K + 1, CFG.value_bins) and reward.shape == (B, K, CFG.reward_bins)
    assert projection.shape == target.shape == (B, K, CFG.projection_dim)


def test_unroll_is_representation_then_k_dynamics_steps_with_the_heads_read_at_every_step():
    obs, actions, next_obs = inputs()
    policy, value, reward, projection, _ = unroll(VARIABLES, obs, actions, next_obs)
    _, policies, values, rewards, projections = composed(VARIABLES, obs, actions)
    np.testing.assert_allclose(policy, jnp.stack(policies, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, jnp.stack(values, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward, jnp.stack(rewards, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(projection, jnp.stack(projections, 1), rtol=1e-5, atol=1e-5)
    # The steps really differ (the test would notice outputs read from the wrong step).
    assert not np.allclose(value[:, 1], value[:, 2], atol=1e-3)


def test_value_prefix_lstm_carry_restarts_from_zero_every_lstm_horizon_steps():
    obs, actions, next_obs = inputs()
    reward = unroll(VARIABLES, obs, actions, next_obs)[2]
    latents, _, _, threaded, _ = composed(VARIABLES, obs, actions, reset_every=None)
    # At the reset positions (k = 0, 2 with horizon 2) the reward head starts from the zero carry: the
    # earlier steps reach it only through the latent.
    for k in range(0, K, HORIZON):
        zero = initial_lstm_carry(CFG, B)
        _, _, fresh = NET.apply(VARIABLES, latents[k], actions[:, k], zero, method=EZNet.dynamics)
        np.testing.assert_allclose(reward[:, k], fresh, rtol=1e-5, atol=1e-5, err_msg=f"step {k}")
    # Without the reset, the carry of steps 0-1 would change the step-2 reward.
    assert not np.allclose(reward[:, HORIZON], threaded[HORIZON], atol=1e-3)
    # Between resets the carry threads through: step 1 depends on the step-0 carry.
    np.testing.assert_allclose(reward[:, 1], threaded[1], rtol=1e-5, atol=1e-5)
    _, _, alone = NET.apply(VARIABLES, latents[1], actions[:, 1], initial_lstm_carry(CFG, B), method=EZNet.dynamics)
    assert not np.allclose(reward[:, 1], alone, atol=1e-3)


def head_readouts(policies, values, projections):
    """[steps+1] a fixed linear read-out of the heads at each step k (not of the reward head, whose carry
    also reads the previous, less-scaled latent)."""
    out = []
    for k in range(len(values)):
        rng = np.random.default_rng(k)
        loss = jnp.sum(values[k] * rng.normal(size=values[k].shape))
        loss = loss + jnp.sum(policies[k] * rng.normal(size=policies[k].shape))
        if k > 0:
            loss = loss + jnp.sum(projections[k - 1] * rng.normal(size=projections[k - 1].shape))
        out.append(loss)
    return jnp.stack(out)


def unrolled_readouts(variables, obs, actions, next_obs):
    policy, value, _, projection, _ = unroll(variables, obs, actions, next_obs)
    return head_readouts(jnp.moveaxis(policy, 1, 0), jnp.moveaxis(value, 1, 0), jnp.moveaxis(projection, 1, 0))


def composed_readouts(variables, obs, actions):
    _, policies, values, _, projections = composed(variables, obs, actions)
    return head_readouts(policies, values, projections)


def test_gradient_reaching_the_observation_from_step_k_is_halved_once_per_unrolled_step():
    obs, actions, next_obs = inputs()
    scaled = jax.jacrev(lambda o: unrolled_readouts(VARIABLES, o, actions, next_obs))(obs)  # [K+1, B, OBS]
    plain = jax.jacrev(lambda o: composed_readouts(VARIABLES, o, actions))(obs)
    for k in range(K + 1):
        assert np.abs(plain[k]).max() > 1e-3
        np.testing.assert_allclose(scaled[k], 0.5**k * plain[k], rtol=1e-4, atol=1e-6, err_msg=f"step {k}")


def test_gradient_scaling_halves_the_latent_not_the_heads_that_read_it():
    obs, actions, next_obs = inputs()
    k, actions, next_obs = 1, actions[:, :1], next_obs[:, :1]  # a one-step unroll
    scaled = jax.grad(lambda p: unrolled_readouts(dict(VARIABLES, params=p), obs, actions, next_obs)[k])(
        VARIABLES["params"])
    plain = jax.grad(lambda p: composed_readouts(dict(VARIABLES, params=p), obs, actions)[k])(VARIABLES["params"])
    # The heads read the step-1 latent: their own parameters get the full gradient ...
    for head in ("prediction", "projector", "predictor"):
        jax.tree.map(lambda s, p: np.testing.assert_allclose(s, p, rtol=1e-4, atol=1e-6), scaled[head], plain[head])
    # ... while everything upstream of the latent (the step-1 dynamics and the representation) gets half.
    for trunk in ("dynamics_net", "representation"):
        jax.tree.map(lambda s, p: np.testing.assert_allclose(s, 0.5 * p, rtol=1e-4, atol=1e-6),
                     scaled[trunk], plain[trunk])
        assert max(float(np.abs(g).max()) for g in jax.tree.leaves(plain[trunk])) > 1e-3


def test_consistency_targets_are_the_projected_true_observations_without_predictor_or_gradient():
    obs, actions, next_obs = inputs()
    target = unroll(VARIABLES, obs, actions, next_obs)[4]
    for k in range(K):
        encoded = NET.apply(VARIABLES, next_obs[:, k], method=EZNet.represent)
        np.testing.assert_allclose(target[:, k], NET.apply(VARIABLES, encoded, method=EZNet.project),
                                   rtol=1e-5, atol=1e-5)
    weights = np.random.default_rng(0).normal(size=target.shape)

    def target_loss(params, next_obs):
        return jnp.sum(unroll(dict(VARIABLES, params=params), obs, actions, next_obs)[4] * weights)

    grad_params, grad_next_obs = jax.grad(target_loss, argnums=(0, 1))(VARIABLES["params"], next_obs)
    assert all(not np.any(g) for g in jax.tree.leaves(grad_params))
    assert not np.any(grad_next_obs)
