"""The reference's environment protocols, end to end through envpool: what one agent step is,
what one reward is, and how long a training game may last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ezv import envs

NUM_ENVS = 2


def _run(env, actions):
    """Reset, then step through `actions` [T, N, ...]; -> stacked TimeSteps as numpy."""

    def run(key, actions):
        state, _ = env.reset(key)
        _, traj = jax.lax.scan(lambda s, a: env.step(s, a), state, actions)
        return traj

    return jax.tree.map(np.asarray, jax.jit(run)(jax.random.PRNGKey(0), actions))


@pytest.mark.parametrize(
    "env_id, physics_steps",
    [("WalkerWalk-v1", 10), ("CheetahRun-v1", 1)],  # one control step = 10 (walker) or 1 physics steps
)
def test_dmc_agent_step_is_action_repeat_control_steps_with_summed_rewards(env_id, physics_steps):
    repeat2 = envs.make(env_id, num_envs=NUM_ENVS, seed=3)  # the default: action_repeat 2
    repeat1 = envs.make(env_id, num_envs=NUM_ENVS, seed=3, action_repeat=1)
    assert repeat2.spec.options["action_repeat"] == 2
    # envpool's own sub-step count is kept, so one envpool step is one dm_control control step.
    assert repeat2.spec.options["physics_steps_per_control_step"] == physics_steps
    steps, dim = 20, repeat2.spec.action_space.dim
    actions = jax.random.uniform(jax.random.PRNGKey(1), (steps, NUM_ENVS, dim), minval=-1.0, maxval=1.0)
    coarse = _run(repeat2, actions)
    fine = _run(repeat1, jnp.repeat(actions, 2, axis=0))  # the same action for two control steps
    # After agent step t the simulation is where two control steps per action put it ...
    np.testing.assert_allclose(coarse.obs, fine.obs[1::2], rtol=1e-5, atol=1e-5)
    # ... and the agent's reward is the sum of the two control steps' rewards.
    np.testing.assert_allclose(coarse.reward, fine.reward[0::2] + fine.reward[1::2], rtol=1e-5, atol=1e-6)


def test_dmc_episode_is_500_agent_steps_on_the_0_to_1000_scale():
    env = envs.make("CartpoleBalance-v1", num_envs=NUM_ENVS, seed=0)
    assert env.spec.max_episode_steps == 500
    traj = _run(env, jnp.zeros((501, NUM_ENVS, 1)))
    # The balance task starts near upright: two control steps earn more than the 1.0 one can.
    assert traj.reward[:50].max() > 1.0
    assert not traj.last[:499].any() and traj.truncated[499].all() and not traj.terminated.any()
    assert traj.first[500].all()  # the late reset
    np.testing.assert_array_equal(traj.episode_length[499], 500)
    np.testing.assert_allclose(traj.episode_return[499], traj.reward[:500].sum(0), rtol=1e-5)
    assert (traj.episode_return[499] > 500).all()  # summed rewards: a 0-1000 scale, not 0-500


def test_atari_training_games_go_on_past_3000_agent_steps():
    # The reference's 3000-step limit cuts one life's trajectory and the game goes on; games end at
    # gym's 100k-step cap. Montezuma's Revenge with no-ops never loses a life, so nothing may end.
    env = envs.make("MontezumaRevenge-v5", num_envs=1, seed=0)
    assert env.spec.max_episode_steps == 100_000 and env.spec.options["episodic_life"]
    traj = _run(env, jnp.zeros((3200, 1), jnp.int32))
    assert not traj.last.any() and not traj.episode_done.any()
