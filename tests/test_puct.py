"""EfficientZero (2021)'s pUCT search (`ezv.puct`) and the acting rules of the EZ-V1 and MuZero modes
(`ezv.acting`), against hand-computed trees and schedules (family reference B.1, B.2, B.6)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from ezv import acting, puct
from ezv.config import Config, SearchConfig
from ezv.qtransforms import normalise_by_range
from ezv.search import SearchOutput, visit_count_search

C1, C2, GAMMA = 1.25, 19652.0, 0.9


def hand_tree() -> mctx.Tree:
    """An unbatched tree of 3 actions, γ = 0.9:

        root(0) -a0-> node 1 (2 visits, V 1.0, r 0.5) -a1-> node 3 (1 visit, V 0.4, r 0.3)
                -a1-> node 2 (1 visit, V 0.2, r 0.1)
                -a2-> unvisited
    Edge Q̃: root a0 1.4, root a1 0.28, node 1 a1 0.66, so the tree's range is [0.28, 1.4]."""
    N, A = 5, 3
    children_index = np.full((N, A), -1, np.int32)
    children_index[0, 0], children_index[0, 1], children_index[1, 1] = 1, 2, 3
    visits = np.zeros((N, A), np.int32)
    visits[0, 0], visits[0, 1], visits[1, 1] = 2, 1, 1
    rewards = np.zeros((N, A), np.float32)
    rewards[0, 0], rewards[0, 1], rewards[1, 1] = 0.5, 0.1, 0.3
    node_values = np.array([0.9, 1.0, 0.2, 0.4, 0.0], np.float32)
    children_values = np.zeros((N, A), np.float32)
    children_values[0, 0], children_values[0, 1], children_values[1, 1] = 1.0, 0.2, 0.4
    priors = np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1 / 3] * 3, [1 / 3] * 3, [1 / 3] * 3], np.float32))
    return mctx.Tree(
        node_visits=jnp.array([4, 2, 1, 1, 0], jnp.int32),
        raw_values=jnp.asarray(node_values),
        node_values=jnp.asarray(node_values),
        parents=jnp.array([-1, 0, 0, 1, -1], jnp.int32),
        action_from_parent=jnp.array([-1, 0, 1, 1, -1], jnp.int32),
        children_index=jnp.asarray(children_index),
        children_prior_logits=jnp.asarray(priors),
        children_visits=jnp.asarray(visits),
        children_rewards=jnp.asarray(rewards),
        children_discounts=jnp.full((N, A), GAMMA, jnp.float32),
        children_values=jnp.asarray(children_values),
        embeddings=jnp.zeros((N,)),
        root_invalid_actions=jnp.zeros((A,)),
        extra_data=None,
    )


def select(tree, node, key=0):
    return int(puct.puct_action_selection(jax.random.PRNGKey(key), tree, node, pb_c_init=C1, pb_c_base=C2))


def test_mean_q_is_the_visited_childrens_mean_at_the_root_and_carries_the_parents_below():
    tree = hand_tree()
    mean_q = np.asarray(puct.mean_qvalues(tree, puct.edge_qvalues(tree)))
    # root: (1.4 + 0.28) / 2; node 1: (0.84 + 0.66) / 2; node 2 (no visited child): (0.84 + 0) / 1.
    np.testing.assert_allclose(mean_q[:4], [0.84, 0.75, 0.84, 0.75], rtol=1e-6)


def test_root_selection_scores_the_unvisited_child_with_the_mean_q_and_counts_child_visits_only():
    # N = Σ child visits = 3. pb_c = c1 + ln((3 + c2 + 1)/c2); values normalised by the tree's range.
    pb_c = C1 + math.log((3 + C2 + 1) / C2)
    norm = lambda q: (q - 0.28) / (1.4 - 0.28)  # noqa: E731
    scores = [pb_c * math.sqrt(3) / 3 * 0.2 + norm(1.4),  # 1.144
              pb_c * math.sqrt(3) / 2 * 0.3 + norm(0.28),  # 0.325
              pb_c * math.sqrt(3) / 1 * 0.5 + norm(0.84)]  # 1.583: the unvisited child at the root's mean Q
    assert int(np.argmax(scores)) == 2
    assert all(select(hand_tree(), 0, key) == 2 for key in range(5))
    # The unvisited-child rule decides: scored with the lowest Q̃ (mctx's filling), a2 would lose to a0.
    assert pb_c * math.sqrt(3) * 0.5 + norm(0.28) < scores[0]


def test_interior_selection_uses_the_nodes_mean_q_through_its_parent():
    # Node 1: N = 1, priors [0.6, 0.2, 0.2]; a1 visited (Q̃ 0.66), a0 and a2 at the node's mean Q 0.75.
    pb_c = C1 + math.log((1 + C2 + 1) / C2)
    norm = lambda q: (q - 0.28) / 1.12  # noqa: E731
    scores = [pb_c * 0.6 + norm(0.75), pb_c / 2 * 0.2 + norm(0.66), pb_c * 0.2 + norm(0.75)]
    assert int(np.argmax(scores)) == 0
    assert select(hand_tree(), 1) == 0


def test_a_range_below_the_floor_is_divided_by_the_floor_and_an_empty_range_leaves_q_clipped():
    q = jnp.array([0.500, 0.505, 0.502])
    np.testing.assert_allclose(normalise_by_range(q, jnp.float32(0.5), jnp.float32(0.505)), [0.0, 0.5, 0.2],
                               atol=1e-5)
    np.testing.assert_allclose(normalise_by_range(jnp.array([-0.3, 0.4, 1.7]), jnp.float32(jnp.inf),
                                                  jnp.float32(-jnp.inf)), [0.0, 0.4, 1.0])


def test_a_fresh_node_is_a_random_tie_not_the_highest_prior():
    # No child visited: N = 0 zeroes every prior term and every value is the same mean Q, so EZ-V1 breaks
    # the tie at random (mctx's 1 + Σ would pick the prior's argmax every time).
    tree = hand_tree()
    picks = {select(tree, 2, key) for key in range(40)}
    assert picks == {0, 1, 2}


def bandit(best: int, num_actions: int):
    """Only `best` pays 1 at the root; everything else pays 0 and every state is worth 0."""
    def recurrent_fn(params, key, action, depth):
        batch = action.shape[0]
        reward = jnp.where((depth == 0) & (action == best), 1.0, 0.0)
        return mctx.RecurrentFnOutput(reward=reward, discount=jnp.full((batch,), 0.99),
                                      prior_logits=jnp.zeros((batch, num_actions)),
                                      value=jnp.zeros((batch,))), depth + 1
    return recurrent_fn


@pytest.mark.parametrize("num_actions", [2, 6])
def test_the_search_finds_the_paying_action_against_the_prior_and_its_policy_is_the_visit_distribution(num_actions):
    best, batch = num_actions - 1, 3
    prior = jnp.zeros((batch, num_actions)).at[:, 0].set(2.0)
    root = mctx.RootFnOutput(prior_logits=prior, value=jnp.zeros((batch,)), embedding=jnp.zeros((batch,), jnp.int32))
    out = visit_count_search(None, jax.random.PRNGKey(0), root, bandit(best, num_actions),
                             cfg=SearchConfig(kind="puct"), num_simulations=30, evaluation=True)
    np.testing.assert_array_equal(out.action, best)
    np.testing.assert_allclose(out.policy.sum(-1), 1.0, rtol=1e-6)
    counts = np.asarray(out.policy) * 30  # visit counts / 30 simulations
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


def test_mean_q_by_pointer_jumping_equals_the_walk_from_the_root_on_a_deep_tree():
    # A random model over 3 actions, 40 simulations: paths deeper than the hand tree's.
    def recurrent_fn(params, key, action, embedding):
        k1, k2 = jax.random.split(key)
        batch = action.shape[0]
        return mctx.RecurrentFnOutput(reward=jax.random.normal(k1, (batch,)), discount=jnp.full((batch,), 0.9),
                                      prior_logits=jax.random.normal(k2, (batch, 3)),
                                      value=jax.random.normal(k2, (batch,))), embedding
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((1, 3)), value=jnp.zeros((1,)), embedding=jnp.zeros((1,)))
    _, tree = puct.puct_search(None, jax.random.PRNGKey(3), root, recurrent_fn, num_simulations=40, pb_c_init=C1,
                               pb_c_base=C2, dirichlet_alpha=0.3, dirichlet_fraction=0.25)
    tree = jax.tree.map(lambda x: x[0], tree)
    q = np.asarray(puct.edge_qvalues(tree))
    visits, parents = np.asarray(tree.children_visits), np.asarray(tree.parents)

    def walked(node):
        visited = visits[node] > 0
        if node == 0:
            return q[0][visited].mean() if visited.any() else 0.0
        return (walked(parents[node]) + q[node][visited].sum()) / (visited.sum() + 1)

    expanded = np.flatnonzero(np.asarray(tree.node_visits) > 0)
    depth = lambda n: 0 if n == 0 else 1 + depth(parents[n])  # noqa: E731
    assert max(depth(n) for n in expanded) >= 4
    np.testing.assert_allclose(np.asarray(puct.mean_qvalues(tree, puct.edge_qvalues(tree)))[expanded],
                               [walked(n) for n in expanded], rtol=1e-5, atol=1e-6)


def test_dirichlet_noise_mixes_the_root_prior_while_acting_and_is_off_in_evaluation(monkeypatch):
    seen = []
    original = puct.puct_search

    def spy(*args, **kwargs):
        seen.append(kwargs["dirichlet_fraction"])
        return original(*args, **kwargs)

    monkeypatch.setattr("ezv.search.puct_search", spy)
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((2, 4)), value=jnp.zeros((2,)),
                             embedding=jnp.zeros((2,), jnp.int32))
    for evaluation in (False, True):
        visit_count_search(None, jax.random.PRNGKey(0), root, bandit(1, 4), cfg=SearchConfig(kind="puct"),
                           num_simulations=4, evaluation=evaluation)
    assert seen == [0.25, 0.0]
    noisy = np.exp(np.asarray(puct.noisy_root_logits(jax.random.PRNGKey(1), jnp.zeros((2, 4)), 0.3, 0.25)))
    np.testing.assert_allclose(noisy.sum(-1), 1.0, rtol=1e-5)
    assert np.all(noisy >= 0.75 * 0.25 - 1e-6) and not np.allclose(noisy, 0.25)


# --- acting ---------------------------------------------------------------------------------


def test_the_visit_temperature_falls_at_half_and_three_quarters_of_the_collection_updates():
    T = lambda u: float(acting.visit_temperature((1.0, 0.5, 0.25), (0.5, 0.75), jnp.int32(u), 1000))  # noqa: E731
    assert [T(0), T(499), T(500), T(749), T(750), T(5000)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_epsilon_falls_linearly_over_its_env_steps_then_stays():
    eps = lambda s: float(acting.linear_epsilon(1.0, 0.05, 100_000, jnp.int32(s)))  # noqa: E731
    np.testing.assert_allclose([eps(0), eps(50_000), eps(100_000), eps(400_000)], [1.0, 0.525, 0.05, 0.05], rtol=1e-6)


def test_visit_sampling_follows_n_to_the_one_over_t_and_t_zero_is_the_argmax():
    policy = jnp.tile(jnp.array([[0.1, 0.3, 0.6, 0.0]]), (20_000, 1))
    key = jax.random.PRNGKey(0)
    freq = lambda t: np.bincount(np.asarray(acting.sample_visits(key, policy, jnp.float32(t))), minlength=4) / 20_000  # noqa: E731
    np.testing.assert_allclose(freq(1.0), [0.1, 0.3, 0.6, 0.0], atol=0.015)
    sharp = np.array([0.1, 0.3, 0.6]) ** 2 / np.sum(np.array([0.1, 0.3, 0.6]) ** 2)
    np.testing.assert_allclose(freq(0.5)[:3], sharp, atol=0.015)
    np.testing.assert_array_equal(freq(0.0), [0, 0, 1, 0])


def acting_rule(num_actions=4, **acting_fields):
    cfg = dataclasses.replace(Config(), search=SearchConfig(kind="puct"),
                              acting=dataclasses.replace(Config().acting, **acting_fields))
    return acting.ActingRule(cfg, (), num_actions)


def test_random_actions_before_the_learner_starts_and_search_actions_after():
    rule = acting_rule(random_before_learning=True, temperatures=(0.0,), temperature_switches=())
    out = SearchOutput(action=jnp.full((4000,), 2, jnp.int32), policy=jnp.tile(jnp.array([[0.0, 0.0, 1.0, 0.0]]),
                       (4000, 1)), value=jnp.zeros((4000,)), raw_value=jnp.zeros((4000,)))
    before = np.asarray(rule.choose(jax.random.PRNGKey(0), out, jnp.int32(10), jnp.int32(0)))
    after = np.asarray(rule.choose(jax.random.PRNGKey(0), out, jnp.int32(10), jnp.int32(1)))
    assert set(np.unique(before)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(after, 2)


def test_epsilon_greedy_replaces_the_most_visited_action_with_probability_epsilon():
    rule = acting_rule(temperatures=(0.0,), temperature_switches=(), epsilon_start=1.0, epsilon_final=0.0,
                       epsilon_env_steps=1000)
    n = 8000
    out = SearchOutput(action=jnp.zeros((n,), jnp.int32), policy=jnp.tile(jnp.array([[0.0, 0.0, 1.0, 0.0]]), (n, 1)),
                       value=jnp.zeros((n,)), raw_value=jnp.zeros((n,)))
    # Config() has 4 envs: iteration 125 = 500 env steps, ε = 0.5; a random pick is action 2 a quarter of the time.
    chosen = np.asarray(rule.choose(jax.random.PRNGKey(1), out, jnp.int32(125), jnp.int32(10)))
    assert abs(np.mean(chosen != 2) - 0.5 * 0.75) < 0.02
    late = np.asarray(rule.choose(jax.random.PRNGKey(1), out, jnp.int32(1000), jnp.int32(10)))
    np.testing.assert_array_equal(late, 2)


def test_ezv2s_default_acting_draws_nothing():
    assert not acting.ActingRule(Config(), (), 4).active
