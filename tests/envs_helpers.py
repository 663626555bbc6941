"""Rollout and contract checks shared by the env tests."""

from __future__ import annotations

import functools

import jax
import numpy as np

from ezv.envs import TimeStep, VecEnv


@functools.cache
def compiled_rollout(env: VecEnv, steps: int):
    """jit(reset + scan of `steps` random-action steps) -> (first TimeStep, stacked TimeSteps [T, N, ...])."""

    def run(key):
        state, ts0 = env.reset(key)

        def body(state, k):
            state, ts = env.step(state, env.random_actions(k))
            return state, ts

        _, traj = jax.lax.scan(body, state, jax.random.split(key, steps))
        return ts0, traj

    return jax.jit(run)


def rollout(env: VecEnv, key: jax.Array, steps: int) -> tuple[TimeStep, TimeStep]:
    ts0, traj = compiled_rollout(env, steps)(key)
    return jax.tree.map(np.asarray, ts0), jax.tree.map(np.asarray, traj)


def check_shapes(env: VecEnv, ts0: TimeStep, traj: TimeStep, steps: int) -> None:
    n, spec = env.num_envs, env.spec
    assert ts0.obs.shape == (n, *spec.obs_shape)
    assert traj.obs.shape == (steps, n, *spec.obs_shape)
    assert traj.obs.dtype == spec.obs_dtype, (traj.obs.dtype, spec.obs_dtype)
    for name in ("terminated", "truncated", "first", "episode_done"):
        assert getattr(traj, name).shape == (steps, n) and getattr(traj, name).dtype == np.bool_, name
    assert traj.reward.shape == (steps, n) and traj.reward.dtype == np.float32
    assert traj.episode_return.dtype == np.float32 and traj.episode_length.dtype == np.int32
    assert ts0.first.all() and not ts0.last.any()


def check_auto_reset(ts0: TimeStep, traj: TimeStep) -> None:
    """The step after an episode's end, and only that step, starts a new episode with reward 0."""
    last = np.concatenate([ts0.last[None], traj.last[:-1]], axis=0)
    np.testing.assert_array_equal(traj.first, last)
    assert not (traj.terminated & traj.truncated).any()
    assert (traj.reward[traj.first] == 0).all()
    assert not traj.last[traj.first].any()


def episodes(ts0: TimeStep, traj: TimeStep) -> list[dict]:
    """Replay the trajectory and list every finished episode per env: summed rewards and length."""
    steps, n = traj.reward.shape
    out = []
    for e in range(n):
        total, length = 0.0, 0
        for t in range(steps):
            if traj.first[t, e]:
                total, length = 0.0, 0
                continue
            total += float(traj.reward[t, e])
            length += 1
            if traj.last[t, e]:
                out.append(
                    dict(env=e, t=t, sum=total, length=length, terminated=bool(traj.terminated[t, e]),
                         truncated=bool(traj.truncated[t, e]), stats_done=bool(traj.episode_done[t, e]),
                         stats_return=float(traj.episode_return[t, e]), stats_length=int(traj.episode_length[t, e]))
                )
    return out


def check_episode_stats(ts0: TimeStep, traj: TimeStep, max_steps: int) -> list[dict]:
    """Finished-episode statistics equal the rewards summed since the reset; the time limit truncates."""
    eps = episodes(ts0, traj)
    assert eps, "no episode finished; lengthen the rollout"
    for ep in eps:
        assert ep["stats_done"], ep
        np.testing.assert_allclose(ep["stats_return"], ep["sum"], rtol=1e-5, atol=1e-4)
        assert ep["stats_length"] == ep["length"], ep
        assert ep["length"] <= max_steps, ep
        if ep["truncated"]:
            assert ep["length"] == max_steps, ep
        if ep["length"] == max_steps:
            assert ep["truncated"] or ep["terminated"], ep
    assert traj.episode_done.sum() == len(eps)
    assert (traj.episode_return[~traj.episode_done] == 0).all()
    return eps
