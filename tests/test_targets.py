"""Learning targets against hand-computed small trajectories (reference §4, §0 fixes)."""

import jax.numpy as jnp
import numpy as np
import pytest

from ezv import targets
from ezv.replay import Window

G = 0.5  # discount, chosen so that hand sums are exact


def window(rewards, last=(), terminal=(), present=None, P=None):
    """One window (B=1) of P positions; `last`/`terminal` list the positions holding final obs."""
    P = P or len(rewards)
    r = np.zeros((1, P), np.float32)
    r[0, : len(rewards)] = rewards
    flags = lambda idx: jnp.asarray(np.isin(np.arange(P), idx)[None])  # noqa: E731
    pres = np.ones((1, P), bool) if present is None else np.asarray(present, bool)[None]
    return Window(
        obs=jnp.zeros((1, P, 1)),
        action=jnp.zeros((1, P), jnp.int32),
        reward=jnp.asarray(r),
        first=flags(()),
        last=flags(last),
        terminal=flags(terminal),
        present=jnp.asarray(pres),
        step=jnp.zeros((1,), jnp.int32),
    )


def values(*v):
    return jnp.asarray(np.array(v, np.float32)[None])


def test_n_step_return_in_the_middle_of_an_episode():
    # K=1, n=2 -> P=4. z_0 = r0 + g r1 + g^2 v2 ; z_1 = r1 + g r2 + g^2 v3
    w = window([1.0, 2.0, 4.0, 0.0])
    z = targets.n_step_returns(w, values(10.0, 20.0, 30.0, 40.0), unroll_steps=1, td_steps=2, discount=G)
    np.testing.assert_allclose(z[0], [1 + G * 2 + G**2 * 30, 2 + G * 4 + G**2 * 40])


def test_termination_inside_the_horizon_stops_the_sum_without_bootstrap():
    # The episode's final (terminal) observation is at position 2.
    w = window([1.0, 2.0, 0.0, 0.0, 0.0], last=[2], terminal=[2])
    z = targets.n_step_returns(w, values(10.0, 20.0, 99.0, 99.0, 99.0), unroll_steps=2, td_steps=2, discount=G)
    np.testing.assert_allclose(z[0], [1 + G * 2, 2.0, 0.0])  # a terminal state's value is 0


def test_truncation_bootstraps_from_the_stored_final_observation():
    w = window([1.0, 2.0, 0.0, 0.0, 0.0, 0.0], last=[2], terminal=[])
    z = targets.n_step_returns(w, values(10.0, 20.0, 30.0, 99.0, 99.0, 99.0), unroll_steps=2, td_steps=3, discount=G)
    np.testing.assert_allclose(z[0], [1 + G * 2 + G**2 * 30, 2 + G * 30, 30.0])


def test_the_newest_written_row_bootstraps_instead_of_dropping_the_target():
    # Positions 3.. are not written yet (the env is mid-episode): bootstrap from position 2.
    w = window([1.0, 2.0, 4.0, 0.0, 0.0], present=[1, 1, 1, 0, 0])
    z = targets.n_step_returns(w, values(10.0, 20.0, 30.0, 99.0, 99.0), unroll_steps=1, td_steps=3, discount=G)
    np.testing.assert_allclose(z[0], [1 + G * 2 + G**2 * 30, 2 + G * 30])


def test_unroll_mask_stops_after_the_final_observation():
    w = window([1.0, 1.0, 0.0, 5.0, 5.0, 5.0], last=[2], terminal=[2])
    np.testing.assert_array_equal(targets.unroll_mask(w, 4)[0], [1, 1, 1, 0, 0])
    w = window([1.0] * 6, present=[1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(targets.unroll_mask(w, 3)[0], [1, 1, 0, 0])


@pytest.mark.parametrize("value_prefix, horizon, expected", [
    (False, 5, [1, 2, 4, 8, 16, 32]),
    (True, 5, [1, 3, 7, 15, 31, 32]),  # running sums, reset after 5 steps
    (True, 2, [1, 3, 4, 12, 16, 48]),
])
def test_reward_targets_are_rewards_or_value_prefixes_reset_every_horizon(value_prefix, horizon, expected):
    w = window([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 0.0])
    got = targets.reward_targets(w, 6, value_prefix, horizon)
    np.testing.assert_allclose(got[0], expected)


def test_mixed_value_target_uses_td_before_t1_and_for_recent_data_else_search_values():
    sample_step = jnp.array([0, 90, 99])  # iterations that wrote the samples
    iteration, envs = jnp.int32(100), 4  # the newest row was written at 99: ages 396, 36, 0 env steps
    early = targets.use_td_target(sample_step, iteration, jnp.int32(10), envs, start_updates=50, recent_env_steps=20)
    late = targets.use_td_target(sample_step, iteration, jnp.int32(60), envs, start_updates=50, recent_env_steps=20)
    np.testing.assert_array_equal(early, [True, True, True])
    np.testing.assert_array_equal(late, [False, False, True])
    td, sve = jnp.full((3, 2), 1.0), jnp.full((3, 2), 2.0)
    terminal = jnp.array([[False, True]] * 3)
    mixed = targets.mixed_value_target(late, td, sve, terminal)
    np.testing.assert_allclose(mixed, [[2.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
