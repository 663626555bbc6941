"""Specification of the functional env layer (ezv.envs): every backend honours one contract."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ezv.envs as envs
from envs_helpers import check_auto_reset, check_episode_stats, check_shapes, rollout

KEY, OTHER_KEY = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
N = 4

# backend case -> (env id, options that make episodes end within the rollout, rollout steps)
CASES = {
    "gymnax": ("CartPole-v1", dict(max_episode_steps=30), 300),
    "gymnax-minatar": ("Breakout-MinAtar", dict(max_episode_steps=12), 200),
    "envpool-atari": ("Breakout-v5", dict(evaluation=True, max_episode_steps=60), 300),
    "envpool-dmc": ("CheetahRun-v1", dict(max_episode_steps=50), 160),
    "envpool-dmc-pixels": ("pixels/CartpoleBalance-v1", dict(max_episode_steps=50, render_size=24), 160),
    "playground": ("dmc/CartpoleBalance", dict(max_episode_steps=50), 160),
    "brax": ("brax/inverted_pendulum", dict(backend="spring", max_episode_steps=40), 160),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """One env per backend and the rollouts every contract test below reads."""
    env_id, options, steps = CASES[request.param]
    env = envs.make(env_id, num_envs=N, seed=0, **options)
    ts0, traj = rollout(env, KEY, steps)
    return dict(name=request.param, env=env, options=options, steps=steps, ts0=ts0, traj=traj)


def test_shapes_and_dtypes_follow_the_spec(case):
    check_shapes(case["env"], case["ts0"], case["traj"], case["steps"])


def test_step_after_an_episode_end_starts_the_next_episode(case):
    check_auto_reset(case["ts0"], case["traj"])


def test_finished_episode_statistics_sum_rewards_since_the_reset_and_time_limit_truncates(case):
    eps = check_episode_stats(case["ts0"], case["traj"], case["env"].spec.max_episode_steps)
    assert any(ep["truncated"] for ep in eps), "the rollout should hit the time limit at least once"


def test_observations_are_not_constant(case):
    obs = case["traj"].obs.astype(np.float32)
    assert obs.std(axis=0).max() > 0


def test_same_seed_replays_the_same_episodes_and_other_seeds_differ(case):
    env, options = case["env"], case["options"]
    env_id = env.spec.env_id
    if env.pure:
        # Pure-JAX envs: the episode is a function of (seed, key).
        _, again = rollout(env, KEY, case["steps"])
        np.testing.assert_array_equal(again.obs, case["traj"].obs)
        np.testing.assert_array_equal(again.reward, case["traj"].reward)
        _, other_key = rollout(env, OTHER_KEY, case["steps"])
        assert not np.array_equal(other_key.obs, case["traj"].obs)
        # The constructor's seed is folded into the key: compare the starts of 16 episodes.
        starts = [
            np.asarray(jax.jit(envs.make(env_id, num_envs=16, seed=seed, **options).reset)(KEY)[1].obs)
            for seed in (0, 1)
        ]
        assert not np.array_equal(*starts)
    else:
        # envpool: the episodes are a function of the seed given at construction.
        _, same = rollout(envs.make(env_id, num_envs=N, seed=0, **options), KEY, case["steps"])
        _, other = rollout(envs.make(env_id, num_envs=N, seed=1, **options), KEY, case["steps"])
        np.testing.assert_array_equal(same.obs, case["traj"].obs)
        np.testing.assert_array_equal(same.reward, case["traj"].reward)
        assert not np.array_equal(other.obs, case["traj"].obs)


def test_envs_in_a_batch_run_different_episodes(case):
    obs = case["traj"].obs.reshape(case["steps"], N, -1)
    assert not np.array_equal(obs[:, 0], obs[:, 1])


# --- Atari protocol ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def atari_training():
    env = envs.make("Breakout-v5", num_envs=N, seed=0)
    ts0, traj = rollout(env, KEY, 500)
    return env, ts0, traj


def test_atari_defaults_follow_the_ezv2_protocol(atari_training):
    env, _, traj = atari_training
    spec = env.spec
    assert spec.obs_shape == (96, 96, 3) and spec.obs_dtype == np.uint8 and spec.frame_stack == 4
    assert spec.max_episode_steps == 100_000 and spec.domain == "atari"  # per game, not per life
    o = spec.options
    assert o["episodic_life"] and o["reward_clip"] and o["frame_skip"] == 4 and o["noop_max"] == 30
    assert o["repeat_action_probability"] == 0.0 and not o["full_action_space"] and not o["use_fire_reset"]
    assert spec.action_space == envs.Discrete(4)  # minimal action set
    assert set(np.unique(traj.reward)) <= {-1.0, 0.0, 1.0}  # clipped


def test_atari_training_episodes_end_per_life_and_statistics_count_whole_games(atari_training):
    _, ts0, traj = atari_training
    check_auto_reset(ts0, traj)
    life_losses = traj.terminated & ~traj.episode_done
    assert life_losses.any(), "a life loss must end a training episode"
    assert traj.episode_done.any(), "a game over within the rollout is needed"
    # A game lasts several lives, so its length exceeds the steps since the last life loss.
    assert traj.episode_length[traj.episode_done].min() > 0
    assert traj.episode_return[traj.episode_done].min() >= 0


def test_atari_evaluation_protocol():
    spec = envs.make("Breakout-v5", num_envs=1, seed=0, evaluation=True).spec
    assert spec.max_episode_steps == 27000
    assert not spec.options["episodic_life"] and not spec.options["reward_clip"]
    spec = envs.make("Breakout-v5", num_envs=1, seed=0, evaluation=True, max_episode_steps=500).spec
    assert spec.max_episode_steps == 500


def test_envpool_dmc_flattens_dict_observations_in_sorted_key_order():
    env = envs.make("CheetahRun-v1", num_envs=2, seed=0)
    assert env.spec.options["obs_keys"] == ["position", "velocity"]
    assert env.spec.obs_shape == (17,) and env.spec.max_episode_steps == 500  # 1000 control steps, repeat 2
    assert env.spec.action_space.dim == 6


def test_playground_defaults_to_action_repeat_2_and_cpu_impl():
    spec = envs.make("dmc/CartpoleBalance", num_envs=1, seed=0).spec
    assert spec.options["action_repeat"] == 2 and spec.options["impl"] == "jax"
    assert spec.max_episode_steps == 500


# --- Errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, expected",
    [("Breakout-v4", "Breakout-v5"), ("dmc/CheetahRunn", "dmc/CheetahRun"), ("cartpole", "CartPole-v1")],
)
def test_unknown_id_names_the_closest_ids_and_the_backends(env_id, expected):
    with pytest.raises(envs.UnknownEnvError) as err:
        envs.make(env_id, num_envs=2)
    message = str(err.value)
    assert expected in message
    for backend in envs.BACKENDS:
        assert backend in message


@pytest.mark.parametrize(
    "env_id, options, named",
    [
        ("CartPole-v1", dict(frame_skip=4), "frame_skip"),
        ("Breakout-v5", dict(num_threads=4), "num_threads"),
        ("dmc/CartpoleBalance", dict(impl="cuda"), "impl"),
        ("CheetahRun-v1", dict(img_size=84), "img_size"),
        ("brax/ant", dict(backend="nope"), "backend"),
    ],
)
def test_unsupported_options_fail_with_a_message_naming_the_option(env_id, options, named):
    with pytest.raises(envs.EnvOptionError, match=named):
        envs.make(env_id, num_envs=1, **options)

