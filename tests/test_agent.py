"""The compiled EZ-V2 program: learner step, determinism, the image pipeline, and learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agent_helpers import evaluate_episodes, learn_once, train_chunk
from tiny import tiny_config

import ezv.envs as envs
from ezv.agent import CompiledAgent
from ezv.config import LearnerConfig, NetworkConfig, ReplayConfig
from ezv.frames import stacked_obs

@pytest.fixture(scope="module")
def cartpole_agent():
    cfg = tiny_config("classic")
    env = envs.make("CartPole-v1", cfg.num_envs, seed=0)
    eval_env = envs.make("CartPole-v1", cfg.eval_episodes, seed=1, evaluation=True)
    return CompiledAgent(cfg, env, eval_env)


def test_same_seed_and_config_give_identical_metrics(cartpole_agent):
    def run():
        state = cartpole_agent.init(jax.random.PRNGKey(7))
        out = []
        for _ in range(3):  # 120 env steps: acting only, then learning
            state, metrics = train_chunk(cartpole_agent)(state)
            out.append(jax.device_get(metrics))
        return out, jax.device_get(state.params)

    first, params_a = run()
    second, params_b = run()
    assert first[-1]["learning"].any(), "the run must reach the learning phase"
    for a, b in zip(first, second):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def test_one_learner_step_on_a_fixed_batch_lowers_the_loss_and_gradients_are_finite():
    # alpha = 0: uniform sampling, so the same key draws the same batch after priorities change.
    # No warm-up: the schedule's first step would otherwise have a learning rate of 0.
    base = tiny_config("classic")
    cfg = dataclasses.replace(base, replay=ReplayConfig(capacity=800, alpha=0.0),
                              learner=dataclasses.replace(base.learner, warmup_fraction=0.0))
    env = envs.make("CartPole-v1", cfg.num_envs, seed=0)
    agent = CompiledAgent(cfg, env)
    state = agent.init(jax.random.PRNGKey(0))
    act = jax.jit(lambda s: jax.lax.scan(lambda s, _: agent.act(s), s, None, length=60)[0])
    state = act(state)
    learn = learn_once(agent)
    key = jax.random.PRNGKey(42)
    losses = []
    for _ in range(8):
        state, metrics = learn(state.replace(key=key))
        losses.append(float(metrics["loss"]))
        assert np.isfinite(float(metrics["grad_norm"]))
    assert losses[1] < losses[0]
    assert losses[-1] < losses[0]
    for leaf in jax.tree.leaves(state.params):
        assert np.isfinite(np.asarray(leaf)).all()


def test_evaluation_plays_one_greedy_episode_per_eval_env(cartpole_agent):
    state = cartpole_agent.init(jax.random.PRNGKey(0))
    result = jax.device_get(evaluate_episodes(cartpole_agent)(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    assert result["finished"].all()
    # CartPole pays 1 per step, so the return of a whole episode is its length.
    np.testing.assert_allclose(result["returns"], result["lengths"])
    again = jax.device_get(evaluate_episodes(cartpole_agent)(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(result["returns"], again["returns"])
    assert not result["capped"].any()


def test_an_evaluation_cap_stops_every_episode_and_scores_it_so_far(cartpole_agent):
    state = cartpole_agent.init(jax.random.PRNGKey(0))
    evaluate = evaluate_episodes(cartpole_agent)
    capped = jax.device_get(evaluate(state.params, state.batch_stats, jax.random.PRNGKey(1), 5))
    assert capped["capped"].all() and not capped["finished"].any()
    np.testing.assert_array_equal(capped["lengths"], 5)
    np.testing.assert_allclose(capped["returns"], 5.0)  # 1 per step; CartPole cannot fail in 5 steps


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_the_atari_image_pipeline_runs_end_to_end(compute_dtype):
    """Conv network, value-prefix LSTM, 4-frame stacks rebuilt from single uint8 frames, augmentation;
    with bfloat16 activations too, the parameters and the optimiser staying float32."""
    net = dataclasses.replace(
        NetworkConfig(), channels=8, reduced_channels=4, conv_head_hidden=(8,), lstm_hidden=16, value_bins=31,
        value_h_max=15.0, reward_bins=31, reward_h_max=15.0, projection_hidden=16, projection_dim=16,
        predictor_hidden=8, compute_dtype=compute_dtype,
    )
    cfg = dataclasses.replace(
        tiny_config("classic"), network=net, learning_starts=24, log_interval=24, num_envs=2, replay_ratio=0.5,
        replay=ReplayConfig(capacity=256), learner=dataclasses.replace(LearnerConfig(), batch_size=4),
    )
    env = envs.make("Breakout-v5", cfg.num_envs, seed=0)
    agent = CompiledAgent(cfg, env)
    state = agent.init(jax.random.PRNGKey(0))
    assert state.replay.obs.shape == (128, 2, 96, 96, 3) and state.replay.obs.dtype == jnp.uint8
    assert state.frames.shape == (2, 4, 96, 96, 3)
    state, metrics = train_chunk(agent)(state)
    state, metrics = train_chunk(agent)(state)
    metrics = jax.device_get(metrics)
    assert metrics["learning"].any()
    learned = metrics["learning"] > 0
    for name in ("loss", "value_loss", "policy_loss", "reward_loss", "consistency_loss", "grad_norm"):
        assert np.isfinite(metrics[name][learned]).all(), name
    assert int(state.updates) > 0
    assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))} <= {jnp.dtype("float32"),
                                                                                     jnp.dtype("int32")}
    latent = agent.model.net.apply(state.variables, stacked_obs(state.frames), method=agent.model.net.represent)
    assert latent.dtype == jnp.dtype(compute_dtype)


def test_the_tree_q_normalisation_trains_through_the_compiled_loop():
    # The agent's search carries each node's path returns in its embedding for this rule.
    base = tiny_config("classic")
    cfg = tiny_config("classic", search=dataclasses.replace(base.search, q_normalisation="tree"))
    agent = CompiledAgent(cfg, envs.make("CartPole-v1", cfg.num_envs, seed=0))
    assert agent.model.fns.path_depth == agent.model.num_simulations
    state = agent.init(jax.random.PRNGKey(0))
    for _ in range(3):
        state, metrics = train_chunk(agent)(state)
    metrics = jax.device_get(metrics)
    assert metrics["learning"].any()
    assert all(np.isfinite(v).all() for k, v in metrics.items() if k.endswith("loss")), metrics
