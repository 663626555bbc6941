"""Completed-Q normalisation: the reference's per-tree min–max (0.01 floor) and mctx's per-node rule."""

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from ezv.config import SearchConfig
from ezv.qtransforms import make_qtransform, tree_value_range
from ezv.search import gumbel_search

GAMMA = 0.5
SCALE = dict(value_scale=0.1, maxvisit_init=50.0)


def hand_built_tree() -> mctx.Tree:
    """Three simulations with γ = 0.5 and uniform priors over 3 actions (node 4 is unused):

        sim 1 expands node 1 = root -a0-> (reward 0.5, v = 2)
        sim 2 expands node 2 = root -a1-> (reward 0.0, v = 1)
        sim 3 expands node 3 = node 1 -a0-> (reward 1.0, v = 4)

    Returns backed up (the reference's CMinMaxStats updates), per simulation:
        sim 1: 0.5 + 0.5·2 = 1.5, and at the root 0.5·1.5 = 0.75
        sim 2: 0 + 0.5·1 = 0.5, root 0.25
        sim 3: 1 + 0.5·4 = 3.0, then 0.5 + 0.5·3 = 2.0, root 1.0
    so the tree's range is [0.25, 3.0]: its minimum is a root update.
    """
    n, a = 5, 3
    z = jnp.zeros((n, a))
    children_index = jnp.full((n, a), -1).at[0, 0].set(1).at[0, 1].set(2).at[1, 0].set(3)
    children_visits = z.at[0, 0].set(2).at[0, 1].set(1).at[1, 0].set(1).astype(jnp.int32)
    children_rewards = z.at[0, 0].set(0.5).at[1, 0].set(1.0)
    node_values = jnp.array([(1.0 + 1.5 + 0.5 + 2.0) / 4, (2.0 + 3.0) / 2, 1.0, 4.0, 0.0])
    children_values = z.at[0, 0].set(node_values[1]).at[0, 1].set(node_values[2]).at[1, 0].set(node_values[3])
    return mctx.Tree(
        node_visits=jnp.array([4, 2, 1, 1, 0], jnp.int32),
        raw_values=jnp.array([1.0, 2.0, 1.0, 4.0, 0.0]),
        node_values=node_values,
        parents=jnp.array([-1, 0, 0, 1, -1], jnp.int32),
        action_from_parent=jnp.array([-1, 0, 1, 0, -1], jnp.int32),
        children_index=children_index.astype(jnp.int32),
        children_prior_logits=z,
        children_visits=children_visits,
        children_rewards=children_rewards,
        children_discounts=jnp.full((n, a), GAMMA),
        children_values=children_values,
        embeddings=jnp.zeros((n, 1)),
        root_invalid_actions=jnp.zeros((a,)),
        extra_data=None,
    )


def test_the_tree_range_is_the_min_and_max_of_every_backed_up_return():
    low, high = tree_value_range(hand_built_tree())
    np.testing.assert_allclose([low, high], [0.25, 3.0], rtol=1e-6)


def test_tree_rule_normalises_by_the_tree_range_and_node_rule_by_the_nodes_own():
    tree = hand_built_tree()
    # Root: Q(a0) = 0.5 + 0.5·2.5 = 1.75, Q(a1) = 0.5·1 = 0.5; a2 unvisited gets the mixed value
    # (v + ΣN·Σπ·Q/Σπ)/(1 + ΣN) = (1 + 3·1.125)/4 = 1.09375. σ scale = (50 + 2)·0.1.
    tree_q = make_qtransform("tree", **SCALE)(tree, 0)
    np.testing.assert_allclose(tree_q, 5.2 * (np.array([1.75, 0.5, 1.09375]) - 0.25) / 2.75, rtol=1e-5)
    node_q = make_qtransform("node", **SCALE)(tree, 0)
    np.testing.assert_allclose(node_q, 5.2 * np.array([1.0, 0.0, 0.59375 / 1.25]), rtol=1e-5)
    # Node 1: Q(a0) = 1 + 0.5·4 = 3.0, the others the mixed value (2 + 1·3)/2 = 2.5; by the tree's
    # range (3.0 − 0.25)/2.75 = 1 and 2.25/2.75, scale (50 + 1)·0.1.
    np.testing.assert_allclose(make_qtransform("tree", **SCALE)(tree, 1),
                               5.1 * np.array([1.0, 2.25 / 2.75, 2.25 / 2.75]), rtol=1e-5)


def test_tree_rule_divides_by_at_least_0_01_and_clips_to_0_1():
    tree = hand_built_tree()
    tiny = tree.replace(raw_values=tree.raw_values * 1e-3, children_rewards=tree.children_rewards * 1e-3,
                        node_values=tree.node_values * 1e-3, children_values=tree.children_values * 1e-3)
    q = make_qtransform("tree", **SCALE)(tiny, 0) / 5.2  # range 2.75e-3 < 0.01
    np.testing.assert_allclose(q, (np.array([1.75, 0.5, 1.09375]) - 0.25) * 1e-3 / 0.01, rtol=1e-4)
    # Before any backup there is no range: Q is only clipped to [0, 1].
    root_only = tree.replace(node_visits=jnp.array([1, 0, 0, 0, 0], jnp.int32),
                             children_visits=jnp.zeros_like(tree.children_visits))
    low, high = tree_value_range(root_only)
    assert low == np.inf and high == -np.inf
    np.testing.assert_allclose(make_qtransform("tree", **SCALE)(root_only, 0), 5.0 * np.ones(3))  # raw v = 1


def flat_bandit(qvalues, gamma=0.99, value=0.5):
    """Every state is worth `value`; the root's actions are worth `qvalues` and every later action
    `value`, so every return the search backs up lies within the Q-values (root updates γ·Q just below)."""

    def recurrent_fn(params, key, action, depth):
        batch = action.shape[0]
        root_reward = jnp.asarray(qvalues)[action] - gamma * value
        out = mctx.RecurrentFnOutput(
            reward=jnp.where(depth == 0, root_reward, (1 - gamma) * value), discount=jnp.full((batch,), gamma),
            prior_logits=jnp.zeros((batch, len(qvalues))), value=jnp.full((batch,), value))
        return out, depth + 1

    return recurrent_fn


def test_near_equal_actions_stay_near_equal_in_the_improved_policy_only_under_the_tree_rule():
    # The audit's example: Q = [0.500, 0.501, 0.499] (an early network, a sparse-reward phase).
    rewards = [0.500, 0.501, 0.499]
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((1, 3)), value=jnp.full((1,), 0.5),
                             embedding=jnp.zeros((1,), jnp.int32))

    def improved_policy(rule):
        out = gumbel_search(None, jax.random.PRNGKey(0), root, flat_bandit(rewards),
                            cfg=SearchConfig(q_normalisation=rule), num_simulations=16,
                            max_considered_actions=3, gumbel_scale=0.0)
        return np.asarray(out.policy[0])

    tree_pi, node_pi = improved_policy("tree"), improved_policy("node")
    assert tree_pi.argmax() == node_pi.argmax() == 1
    # The tree's returns span 0.501 − 0.99·0.499 ≈ 0.007 < 0.01, so q̂ moves by 0.1 per 0.001 of Q:
    # a σ gap of about 5.5 · 0.2 between the best and the worst action, a factor of about 3.
    assert 2 < tree_pi.max() / tree_pi.min() < 4
    assert node_pi.max() / node_pi.min() > 100  # per node: the noise-level gap becomes the full σ range


def searched_trees(value_prefix: bool, num_actions: int = 5, sims: int = 12):
    """One real Gumbel search with a tiny EZ-V2 model whose embeddings carry their paths."""
    from test_search import tiny_model

    from ezv.search import ModelFns

    plain, variables, cfg = tiny_model(num_actions, value_prefix=value_prefix)
    model = ModelFns(plain.net, cfg, discount=0.9, path_depth=sims)
    obs = jax.random.normal(jax.random.PRNGKey(3), (6, 4))
    out = mctx.gumbel_muzero_policy(
        variables, jax.random.PRNGKey(4), model.root(variables, obs), model.recurrent_fn, num_simulations=sims,
        max_num_considered_actions=4, qtransform=make_qtransform("tree", **SCALE))
    return out.search_tree


def test_the_paths_carried_by_embeddings_give_the_same_range_as_walking_the_tree():
    from ezv.qtransforms import tree_value_range_from_paths

    for value_prefix in (False, True):
        tree = searched_trees(value_prefix)
        assert int(tree.node_visits[:, 0].min()) == 13 and int(tree.embeddings.depth.max()) >= 2
        walked = jax.vmap(tree_value_range)(tree)
        read = jax.vmap(tree_value_range_from_paths)(tree)
        np.testing.assert_allclose(read, walked, rtol=1e-5, atol=1e-5)
        # Without the paths the same tree is walked; both give the same σ(q̂) at every node.
        bare = tree.replace(embeddings=tree.embeddings.replace(path_return=None, path_discount=None))
        transform = make_qtransform("tree", **SCALE)
        for node in range(0, 13, 3):
            np.testing.assert_allclose(jax.vmap(transform, (0, None))(tree, node),
                                       jax.vmap(transform, (0, None))(bare, node), rtol=1e-5, atol=1e-5)
