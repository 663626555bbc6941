"""The compiled loop on continuous-action envs: policy-space actions in replay, running observation
statistics, deterministic evaluation, and the continuous learner step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agent_helpers import evaluate_episodes, learn_once, train_chunk
from tiny import tiny_config

import ezv.envs as envs
from ezv import gaussian
from ezv.agent import CompiledAgent
from ezv.config import ReplayConfig


@pytest.fixture(scope="module")
def pendulum_agent():
    cfg = tiny_config("control", env_id="Pendulum-v1")
    env = envs.make("Pendulum-v1", cfg.num_envs, seed=0, max_episode_steps=50)
    eval_env = envs.make("Pendulum-v1", cfg.eval_episodes, seed=1, evaluation=True, max_episode_steps=50)
    return CompiledAgent(cfg, env, eval_env)


def test_the_loop_stores_policy_space_actions_and_learns_on_pendulum(pendulum_agent):
    agent = pendulum_agent
    state = agent.init(jax.random.PRNGKey(0))
    assert state.replay.action.shape == (100, 4, 1) and state.replay.action.dtype == jnp.float32
    for _ in range(3):  # 120 env steps: acting only, then learning
        state, metrics = train_chunk(agent)(state)
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
        state, _ = train_chunk(agent)(state)
    assert float(norm(state)["count"]) > 1e3
    assert not np.allclose(norm(state)["mean"], 0.0)
    # The target network keeps its own copy, refreshed with the online parameters.
    assert "RunningNorm_0" in state.target_batch_stats["representation"]


def test_evaluation_on_pendulum_is_deterministic_for_a_fixed_key(pendulum_agent):
    agent = pendulum_agent
    state = agent.init(jax.random.PRNGKey(0))
    a = jax.device_get(evaluate_episodes(agent)(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    b = jax.device_get(evaluate_episodes(agent)(state.params, state.batch_stats, jax.random.PRNGKey(1)))
    assert a["finished"].all() and (a["lengths"] == 50).all()
    np.testing.assert_array_equal(a["returns"], b["returns"])


@pytest.mark.parametrize("policy_loss", ["full", "simple"])
def test_one_continuous_learner_step_on_a_fixed_batch_lowers_the_loss(policy_loss):
    base = tiny_config("control", env_id="Pendulum-v1")
    cfg = dataclasses.replace(
        base, replay=ReplayConfig(capacity=800, alpha=0.0),
        learner=dataclasses.replace(base.learner, warmup_fraction=0.0, continuous_policy_loss=policy_loss),
    )
    env = envs.make("Pendulum-v1", cfg.num_envs, seed=0, max_episode_steps=50)
    agent = CompiledAgent(cfg, env)
    assert agent.model.policy_loss_kind == policy_loss
    state = agent.init(jax.random.PRNGKey(0))
    state = jax.jit(lambda s: jax.lax.scan(lambda s, _: agent.act(s), s, None, length=60)[0])(state)
    learn = learn_once(agent)
    key = jax.random.PRNGKey(42)
    losses = []
    for _ in range(8):
        state, metrics = learn(state.replace(key=key))
        losses.append(float(metrics["loss"]))
        assert np.isfinite(float(metrics["grad_norm"]))
    assert losses[1] < losses[0] and losses[-1] < losses[0], losses
