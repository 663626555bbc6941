"""Gumbel search on mctx with the EZ-V2 model functions: over discrete actions, and the sampled search over
continuous actions."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest
from tiny import tiny_config

from ezv import gaussian
from ezv.config import NetworkConfig, SearchConfig
from ezv.networks import EZNet
from ezv.search import (
    ContinuousModelFns,
    Embedding,
    ModelFns,
    completed_q_transform,
    gumbel_search,
    sampled_gumbel_search,
)

TINY = tiny_config("classic").network


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


# --- the sampled search over continuous actions -----------------------------------------

TINY_NET = tiny_config("control").network


def tiny_continuous_model(dim: int, search: SearchConfig):
    net = EZNet(TINY_NET, num_actions=None, action_dim=dim)
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), jnp.zeros((1, dim)))
    # Random policy outputs (the zero-initialised head would make every node's π identical).
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jax.random.normal(jax.random.PRNGKey(len(path)), x.shape) * 0.3
        if "prediction" in jax.tree_util.keystr(path) else x,
        variables["params"],
    )
    variables = dict(variables, params=params)
    return ContinuousModelFns(net, TINY_NET, 0.99, search), variables


def run_search(model, variables, key, obs, search_cfg, num_simulations, gumbel_scale, widen, interior=None):
    root_key, search_key = jax.random.split(key)
    root = model.root(variables, obs, root_key, widen=widen)
    if interior is None:
        return sampled_gumbel_search(
            variables, search_key, root, model.recurrent_fn, cfg=search_cfg, num_simulations=num_simulations,
            gumbel_scale=gumbel_scale,
        )
    return sampled_gumbel_search(
        variables, search_key, root, model.recurrent_fn, cfg=search_cfg, num_simulations=num_simulations,
        gumbel_scale=gumbel_scale, interior_selection=interior,
    )


@pytest.mark.parametrize("dim", [1, 3])
def test_the_sampled_search_returns_k_distinct_actions_in_bounds_and_a_distribution_over_them(dim):
    search_cfg = SearchConfig(num_sampled_actions=8, policy_sampled_actions=2)
    model, variables = tiny_continuous_model(dim, search_cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    out = run_search(model, variables, jax.random.PRNGKey(2), obs, search_cfg, 16, 0.0, widen=True)
    assert out.candidates.shape == (4, 8, dim) and out.policy.shape == (4, 8) and out.action.shape == (4, dim)
    assert (jnp.abs(out.candidates) <= gaussian.ACTION_CLIP).all()
    for b in range(4):
        # Distinct draws; only candidates clipped onto the ±0.999 boundary in every dimension can
        # coincide (the reference clips the same way; its widened 3σ samples often reach the clip).
        inside = [c for c in np.asarray(out.candidates[b]) if (np.abs(c) < gaussian.ACTION_CLIP - 1e-6).any()]
        assert len({tuple(c) for c in inside}) == len(inside) >= 2
        # the executed action is one of the candidates
        assert np.isclose(np.abs(out.candidates[b] - out.action[b]).sum(-1), 0).any()
    np.testing.assert_allclose(out.policy.sum(-1), 1.0, rtol=1e-5)
    assert (out.policy >= 0).all() and np.isfinite(out.value).all()


def test_widened_candidates_spread_wider_than_policy_samples():
    search_cfg = SearchConfig(num_sampled_actions=16, policy_sampled_actions=4, wide_std_scale=3.0)
    model, _ = tiny_continuous_model(1, search_cfg)
    outputs = jnp.tile(jnp.array([[0.0, -3.0]]), (2000, 1))  # narrow policy: σ ≈ 0.15
    cands = model.root_candidates(jax.random.PRNGKey(0), outputs, widen=True)
    narrow, wide = cands[:, :4], cands[:, 4:]
    assert float(wide.std()) > 2.0 * float(narrow.std())
    all_from_pi = model.root_candidates(jax.random.PRNGKey(0), outputs, widen=False)
    assert float(all_from_pi.std()) < 1.5 * float(narrow.std())


def test_the_evaluation_search_is_deterministic_for_a_fixed_key():
    search_cfg = SearchConfig(num_sampled_actions=8, policy_sampled_actions=2)
    model, variables = tiny_continuous_model(2, search_cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    go = jax.jit(lambda key: run_search(model, variables, key, obs, search_cfg, 16, 0.0, widen=False).action)
    np.testing.assert_array_equal(go(jax.random.PRNGKey(5)), go(jax.random.PRNGKey(5)))
    assert not np.allclose(go(jax.random.PRNGKey(5)), go(jax.random.PRNGKey(6)))


def interior_visits(tree):
    """[B, nodes, K] child visit counts of every expanded non-root node."""
    expanded = tree.node_visits > 0
    expanded = expanded.at[:, tree.ROOT_INDEX].set(False)
    return tree.children_visits, expanded


def test_unsampled_interior_children_are_never_selected():
    search_cfg = SearchConfig(num_sampled_actions=4, policy_sampled_actions=2, interior_children=2)
    model, variables = tiny_continuous_model(2, search_cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    out = run_search(model, variables, jax.random.PRNGKey(2), obs, search_cfg, 64, 0.0, widen=True)
    visits, expanded = interior_visits(out.tree)
    assert int(visits[:, :, :2][expanded].sum()) > 0, "the tree must grow below the root"
    assert int(visits[:, :, 2:][expanded].sum()) == 0


def test_mctx_interior_rule_with_masked_logits_picks_the_same_children():
    """The reference's worry (§3.5) that a masked slot's score 0 beats visited children does not
    arise: over the valid children the scores π′ − N/(1 + ΣN) sum to 1/(1 + ΣN) > 0, so the best
    valid child always scores above 0. The explicit mask is kept as a guarantee; both rules agree."""
    import mctx

    search_cfg = SearchConfig(num_sampled_actions=4, policy_sampled_actions=2, interior_children=2)
    model, variables = tiny_continuous_model(2, search_cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    logits_only = functools.partial(mctx.gumbel_muzero_interior_action_selection,
                                    qtransform=completed_q_transform(search_cfg))
    a = run_search(model, variables, jax.random.PRNGKey(2), obs, search_cfg, 64, 0.0, widen=True,
                   interior=logits_only)
    b = run_search(model, variables, jax.random.PRNGKey(2), obs, search_cfg, 64, 0.0, widen=True)
    np.testing.assert_array_equal(a.tree.children_visits, b.tree.children_visits)
