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
    episode = 5  # agent steps (10 control steps), so that two episodes and their resets are compared
    repeat2 = envs.make(env_id, num_envs=NUM_ENVS, seed=3, max_episode_steps=episode)  # action_repeat 2
    repeat1 = envs.make(env_id, num_envs=NUM_ENVS, seed=3, action_repeat=1, max_episode_steps=2 * episode)
    assert repeat2.spec.options["action_repeat"] == 2
    # envpool's own sub-step count is kept, so one envpool step is one dm_control control step.
    assert repeat2.spec.options["physics_steps_per_control_step"] == physics_steps
    steps, dim = 2 * (episode + 1), repeat2.spec.action_space.dim
    actions = jax.random.uniform(jax.random.PRNGKey(1), (steps, NUM_ENVS, dim), minval=-1.0, maxval=1.0)
    # The same actions one control step at a time: each agent action twice, a reset step once.
    fine_of = []  # the fine step whose outcome each coarse step must reproduce
    fine_actions = []
    for t in range(steps):
        resetting = t % (episode + 1) == episode
        fine_actions += [actions[t]] * (1 if resetting else 2)
        fine_of.append(len(fine_actions) - 1)
    coarse = _run(repeat2, actions)
    fine = _run(repeat1, jnp.stack(fine_actions))
    # After each agent step the simulation is where two control steps per action put it (and a
    # late reset is one envpool step: the next episode starts on time) ...
    np.testing.assert_allclose(coarse.obs, fine.obs[fine_of], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(coarse.first, fine.first[fine_of])
    np.testing.assert_array_equal(coarse.truncated, fine.truncated[fine_of])
    # ... and the agent's reward is the sum of its control steps' rewards.
    summed = np.stack([fine.reward[i] + (0 if coarse.first[t].all() else fine.reward[i - 1])
                       for t, i in enumerate(fine_of)])
    np.testing.assert_allclose(coarse.reward, summed, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(coarse.episode_length[coarse.last], episode)


def test_dmc_episode_is_500_agent_steps_on_the_0_to_1000_scale():
    env = envs.make("CartpoleBalance-v1", num_envs=NUM_ENVS, seed=0)
    assert env.spec.max_episode_steps == 500
    traj = _run(env, jnp.zeros((1002, NUM_ENVS, 1)))
    # The balance task starts near upright: two control steps earn more than the 1.0 one can.
    assert traj.reward[:50].max() > 1.0
    assert not traj.terminated.any()
    # Episode 1 is steps 0..499, the late reset is step 500 (one envpool step, action ignored),
    # episode 2 is steps 501..1000 with the same 500 agent steps, and step 1001 resets again.
    ends = np.flatnonzero(traj.last.any(1))
    np.testing.assert_array_equal(ends, [499, 1000])
    assert traj.truncated[ends].all() and traj.first[[500, 1001]].all()
    assert not traj.reward[500].any()
    for end, start in ((499, 0), (1000, 501)):
        np.testing.assert_array_equal(traj.episode_length[end], 500)
        np.testing.assert_allclose(traj.episode_return[end], traj.reward[start:end + 1].sum(0), rtol=1e-5)
        assert (traj.episode_return[end] > 500).all()  # summed rewards: a 0-1000 scale, not 0-500


def test_atari_training_games_go_on_past_3000_agent_steps():
    # The reference's 3000-step limit cuts one life's trajectory and the game goes on; games end at
    # gym's 100k-step cap. Montezuma's Revenge with no-ops never loses a life, so nothing may end.
    env = envs.make("MontezumaRevenge-v5", num_envs=1, seed=0)
    assert env.spec.max_episode_steps == 100_000 and env.spec.options["episodic_life"]
    traj = _run(env, jnp.zeros((3200, 1), jnp.int32))
    assert not traj.last.any() and not traj.episode_done.any()
