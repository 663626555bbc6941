"""Gumbel search on mctx with the EZ-V2 model functions."""

import dataclasses

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from ezv.config import NetworkConfig, SearchConfig, classic_preset
from ezv.networks import EZNet
from ezv.search import Embedding, ModelFns, gumbel_search

TINY = dataclasses.replace(
    classic_preset().network, latent_dim=16, mlp_hidden=32, mlp_head_hidden=(16,), projection_hidden=16,
    projection_dim=16, predictor_hidden=16, action_embedding=8,
)


def tiny_model(num_actions: int, value_prefix: bool = False):
    cfg = dataclasses.replace(TINY, value_prefix=value_prefix, lstm_hidden=8)
    net = EZNet(cfg, num_actions=num_actions)
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), jnp.zeros((1,), jnp.int32))
    return ModelFns(net, cfg, discount=0.99), variables, cfg


@pytest.mark.parametrize("num_actions", [2, 6, 18])
def test_search_returns_a_distribution_over_legal_actions(num_actions):
    model, variables, _ = tiny_model(num_actions)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    out = gumbel_search(
        variables, jax.random.PRNGKey(2), model.root(variables, obs), model.recurrent_fn,
        cfg=SearchConfig(), num_simulations=16, max_considered_actions=min(8, num_actions), gumbel_scale=1.0,
    )
    assert out.policy.shape == (5, num_actions)
    np.testing.assert_allclose(out.policy.sum(-1), 1.0, rtol=1e-5)
    assert (out.policy >= 0).all()
    assert ((out.action >= 0) & (out.action < num_actions)).all() and out.action.dtype == jnp.int32
    assert np.isfinite(out.value).all()


def bandit_recurrent_fn(best: int, num_actions: int):
    def fn(params, key, action, embedding):
        reward = jnp.where(action == best, 1.0, 0.0)
        batch = action.shape[0]
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=jnp.full((batch,), 0.99), prior_logits=jnp.zeros((batch, num_actions)),
            value=jnp.zeros((batch,)),
        )
        return out, embedding

    return fn


@pytest.mark.parametrize("num_actions, considered, sims", [(2, 2, 4), (6, 4, 16), (18, 8, 16)])
def test_without_gumbel_noise_the_search_overrules_the_prior_with_a_known_models_rewards(num_actions, considered, sims):
    # The prior prefers action 0; only action `best` pays a reward. Without Gumbel noise the
    # candidates are the top-`considered` actions by prior, which include `best` (second).
    best = num_actions - 1
    batch = 3
    prior = jnp.zeros((batch, num_actions)).at[:, 0].set(1.0).at[:, best].set(0.5)
    root = mctx.RootFnOutput(prior_logits=prior, value=jnp.zeros((batch,)), embedding=jnp.zeros((batch, 1)))
    for seed in range(3):
        out = gumbel_search(
            None, jax.random.PRNGKey(seed), root, bandit_recurrent_fn(best, num_actions), cfg=SearchConfig(),
            num_simulations=sims, max_considered_actions=considered, gumbel_scale=0.0,
        )
        np.testing.assert_array_equal(out.action, best)
        assert (out.policy.argmax(-1) == best).all()


def test_value_prefix_reward_uses_the_parents_reset_flag():
    model, variables, cfg = tiny_model(3, value_prefix=True)
    latent = jax.random.normal(jax.random.PRNGKey(0), (2, cfg.latent_dim))
    carry = (jnp.ones((2, 8)), jnp.ones((2, 8)))
    action = jnp.array([0, 1])

    def run(depth, parent_prefix):
        emb = Embedding(latent=latent, lstm_carry=carry, value_prefix=jnp.full((2,), parent_prefix),
                        depth=jnp.full((2,), depth, jnp.int32))
        return model.recurrent_fn(variables, jax.random.PRNGKey(0), action, emb)

    for depth in (0, 5, 10):  # reset nodes: their children start a new prefix and carry
        out, child = run(depth, 5.0)
        np.testing.assert_allclose(out.reward, child.value_prefix, rtol=1e-6)
        fresh, _ = run(depth, 0.0)
        np.testing.assert_allclose(out.reward, fresh.reward, rtol=1e-6)
    out, child = run(3, 5.0)  # inside a horizon: reward = child prefix - parent prefix
    np.testing.assert_allclose(out.reward, child.value_prefix - 5.0, rtol=1e-5)
    np.testing.assert_array_equal(child.depth, 4)


def test_considered_actions_and_simulations_follow_the_reference_rule():
    s = SearchConfig()
    assert [(s.considered_for(a), s.simulations_for(a)) for a in (2, 3, 4, 9, 15, 16, 18)] == [
        (2, 4), (2, 4), (4, 16), (4, 16), (4, 16), (8, 16), (8, 16)]
    assert NetworkConfig().value_support.bins == 601
