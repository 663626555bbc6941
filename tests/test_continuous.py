"""Continuous control: the squashed-Gaussian policy, the sampling-based Gumbel search, and the
compiled loop on continuous-action envs."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import ezv.envs as envs
from ezv import gaussian
from ezv.agent import Agent
from ezv.config import ReplayConfig, SearchConfig, control_preset
from ezv.networks import EZNet
from ezv.search import ContinuousModelFns, completed_q_transform, sampled_gumbel_search

# --- the squashed Gaussian --------------------------------------------------------------


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


# --- the sampled search -----------------------------------------------------------------

TINY_NET = dataclasses.replace(
    control_preset().network, latent_dim=16, mlp_hidden=32, mlp_head_hidden=(16,), projection_hidden=16,
    projection_dim=16, predictor_hidden=16, action_embedding=8,
)


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


# --- the compiled loop on a continuous-action env -----------------------------------------


def tiny_control(**overrides):
    base = control_preset()
    cfg = dataclasses.replace(
        base,
        env_id="Pendulum-v1",
        num_envs=4,
        total_env_steps=400,
        learning_starts=80,
        log_interval=40,
        eval_interval=40,
        eval_episodes=2,
        network=TINY_NET,
        search=dataclasses.replace(base.search, num_simulations=8, num_sampled_actions=4, policy_sampled_actions=2),
        replay=ReplayConfig(capacity=800),
        learner=dataclasses.replace(base.learner, batch_size=16, entropy_samples=16, target_update_interval=1000),
    )
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(scope="module")
def pendulum_agent():
    cfg = tiny_control()
    env = envs.make("Pendulum-v1", cfg.num_envs, seed=0, max_episode_steps=50)
    eval_env = envs.make("Pendulum-v1", cfg.eval_episodes, seed=1, evaluation=True, max_episode_steps=50)
    return Agent(cfg, env, eval_env)


def test_the_loop_stores_policy_space_actions_and_learns_on_pendulum(pendulum_agent):
    agent = pendulum_agent
    state = agent.init(jax.random.PRNGKey(0))
    assert state.replay.action.shape == (200, 4, 1) and state.replay.action.dtype == jnp.float32
    for _ in range(3):  # 120 env steps: acting only, then learning
        state, metrics = agent.train_chunk(state)
    metrics = jax.device_get(metrics)
    learned = metrics["learning"] > 0
    assert learned.any()
    for name in ("loss", "value_loss", "policy_loss", "reward_loss", "consistency_loss", "policy_entropy"):
        assert np.isfinite(metrics[name][learned]).all(), name
    written = np.asarray(state.replay.action[:30])
    assert (np.abs(written) <= gaussian.ACTION_CLIP).all() and written.std() > 0


def test_running_observation_statistics_are_part_of_the_state_and_move_with_training(pendulum_agent):
    agent = pendulum_agent
    state = agent.init(jax.random.PRNGKey(0))
    norm = lambda s: s.batch_stats["representation"]["RunningNorm_0"]  # noqa: E731
    assert float(norm(state)["count"]) == 1e3 and np.allclose(norm(state)["mean"], 0.0)
    for _ in range(3):
        state, _ = agent.train_chunk(state)
    assert float(norm(state)["count"]) > 1e3
    assert not np.allclose(norm(state)["mean"], 0.0)
    # The target network keeps its own copy, refreshed with the online parameters.
    assert "RunningNorm_0" in state.target_batch_stats["representation"]


def test_evaluation_on_pendulum_is_deterministic_for_a_fixed_key(pendulum_agent):
    agent = pendulum_agent
    state = agent.init(jax.random.PRNGKey(0))
    a = jax.device_get(agent.evaluate(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    b = jax.device_get(agent.evaluate(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    assert a["finished"].all() and (a["lengths"] == 50).all()
    np.testing.assert_array_equal(a["returns"], b["returns"])


@pytest.mark.parametrize("policy_loss", ["full", "simple"])
def test_one_continuous_learner_step_on_a_fixed_batch_lowers_the_loss(policy_loss):
    base = tiny_control()
    cfg = dataclasses.replace(
        base, replay=ReplayConfig(capacity=800, alpha=0.0),
        learner=dataclasses.replace(base.learner, warmup_fraction=0.0, continuous_policy_loss=policy_loss),
    )
    env = envs.make("Pendulum-v1", cfg.num_envs, seed=0, max_episode_steps=50)
    agent = Agent(cfg, env)
    assert agent.continuous_loss == policy_loss
    state = agent.init(jax.random.PRNGKey(0))
    state = jax.jit(lambda s: jax.lax.scan(lambda s, _: agent.act(s), s, None, length=60)[0])(state)
    learn = jax.jit(agent.learn)
    key = jax.random.PRNGKey(42)
    losses = []
    for _ in range(8):
        state, metrics = learn(state.replace(key=key))
        losses.append(float(metrics["loss"]))
        assert np.isfinite(float(metrics["grad_norm"]))
    assert losses[1] < losses[0] and losses[-1] < losses[0], losses
