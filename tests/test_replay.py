"""On-device prioritised trajectory replay: windows, episode boundaries, priorities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ezv import replay as R
from ezv.targets import unroll_mask

EPISODE_LENGTHS = {0: [3, 7, 2, 9, 4, 6, 5, 8], 1: [6, 1, 8, 3, 5, 4, 7, 2]}


def fill(rows: int, iterations: int, obs_shape=(1,), dtype=jnp.float32, scale: int = 100):
    """Write `iterations` rows per env the way `CompiledAgent.act` does, following the env contract.

    Observation = episode_id * scale + step within the episode; reward = the same number;
    even episodes terminate, odd ones are truncated.
    """
    envs = len(EPISODE_LENGTHS)
    rep = R.init(rows, envs, obs_shape, dtype)
    ep = [0] * envs
    t = [0] * envs
    prev = [dict(obs=0.0, first=True, last=False, terminated=False) for _ in range(envs)]
    for i in range(iterations):
        nxt = []
        for e in range(envs):
            if prev[e]["last"]:  # late reset
                ep[e] += 1
                t[e] = 0
                nxt.append(dict(obs=ep[e] * float(scale), reward=0.0, first=True, last=False, terminated=False))
            else:
                t[e] += 1
                length = EPISODE_LENGTHS[e][ep[e] % len(EPISODE_LENGTHS[e])]
                end = t[e] == length
                value = ep[e] * float(scale) + t[e]
                nxt.append(dict(obs=value, reward=value, first=False, last=end,
                                terminated=end and ep[e] % 2 == 0))
        col = lambda rows_, k, dt=np.float32: jnp.asarray(np.array([r[k] for r in rows_], dt))  # noqa: E731
        obs = jnp.broadcast_to(col(prev, "obs").reshape((envs,) + (1,) * len(obs_shape)), (envs,) + obs_shape)
        rep = R.add(rep, jnp.int32(i), obs.astype(dtype), jnp.full((envs,), i, jnp.int32), col(nxt, "reward"),
                    col(prev, "first", bool), col(prev, "last", bool), col(prev, "terminated", bool))
        prev = nxt
    return rep


@pytest.fixture(scope="module")
def buffer():
    return fill(rows=200, iterations=120)


def all_starts(rep):
    return jnp.asarray(np.flatnonzero(np.asarray(R.sampleable(rep)).reshape(-1)), jnp.int32)


def test_windows_never_leak_across_episodes(buffer):
    idx = all_starts(buffer)
    K, n = 3, 3
    w = R.gather(buffer, idx, K + n + 1, frame_stack=1)
    obs = np.asarray(w.obs[..., 0])
    mask = np.asarray(unroll_mask(w, K))
    episode = obs // 100
    step_in_episode = obs % 100
    for k in range(K + 1):
        m = mask[:, k]
        assert (episode[m, k] == episode[m, 0]).all()
        assert (step_in_episode[m, k] == step_in_episode[m, 0] + k).all()
    # Every position after an episode's final observation is masked.
    last = np.asarray(w.last)
    for k in range(1, K + 1):
        assert not mask[last[:, :k].any(1), k].any()
    # Rewards stored with a transition are that transition's own (obs of the next row).
    r = np.asarray(w.reward)
    ok = mask[:, 1]
    np.testing.assert_array_equal(r[ok, 0], obs[ok, 1])


def test_final_observations_are_stored_but_never_sampled_as_starts(buffer):
    last = np.asarray(buffer.last)
    assert last.any()
    assert not np.asarray(R.sampleable(buffer))[last].any()
    # The stored final observation is the episode's last step: episode 0 of env 0 has 3 steps.
    obs = np.asarray(buffer.obs[:, 0, 0])
    assert obs[3] == 3.0 and last[3, 0] and np.asarray(buffer.terminal)[3, 0]
    assert np.asarray(buffer.first)[4, 0] and obs[4] == 100.0


def test_frame_stacks_repeat_the_first_frame_at_an_episode_start():
    rep = fill(rows=200, iterations=60, obs_shape=(2, 2, 1), dtype=jnp.uint8, scale=20)  # stays below 256
    idx = all_starts(rep)
    w = R.gather(rep, idx, 3, frame_stack=3)
    assert w.obs.shape == (idx.shape[0], 3, 2, 2, 3)
    stack = np.asarray(w.obs[:, 0, 0, 0, :]).astype(int)  # [B, 3] oldest first
    newest = stack[:, 2]
    step = newest % 20
    expected = np.stack([newest - np.minimum(step, 2), newest - np.minimum(step, 1), newest], 1)
    np.testing.assert_array_equal(stack, expected)


def test_wrapped_rows_are_not_treated_as_the_same_stream():
    rows = 40
    rep = fill(rows=rows, iterations=100)  # wrapped 2.5 times: row 19 is the newest
    idx = all_starts(rep)
    w = R.gather(rep, idx, 6, frame_stack=1)
    step = np.asarray(w.step)
    present = np.asarray(w.present)
    for k in range(6):
        # A position is present iff it was written k iterations after position 0.
        assert (present[:, k] == (step + k <= 99)).all()
    obs = np.asarray(w.obs[..., 0])
    mask = np.asarray(unroll_mask(w, 5))
    episode = obs // 100
    for k in range(6):
        assert (episode[mask[:, k], k] == episode[mask[:, k], 0]).all()


def test_prioritised_sampling_frequencies_follow_priorities():
    rep = fill(rows=30, iterations=30)
    valid = np.asarray(R.sampleable(rep)).reshape(-1)
    idx = np.flatnonzero(valid)
    rng = np.random.default_rng(0)
    priorities = rng.uniform(0.1, 3.0, size=idx.size).astype(np.float32)
    rep = R.update_priorities(rep, jnp.asarray(idx, jnp.int32), jnp.asarray(priorities))
    alpha = 0.7
    sample = jax.jit(lambda k: R.sample(rep, k, 64, alpha, 1.0, 0.1)[0])
    counts = np.zeros(valid.size)
    draws = 0
    for key in jax.random.split(jax.random.PRNGKey(0), 400):
        got = np.asarray(sample(key))
        np.add.at(counts, got, 1)
        draws += got.size
    assert counts[~valid].sum() == 0
    expected = np.zeros(valid.size)
    expected[idx] = priorities**alpha / (priorities**alpha).sum() * draws
    chi2 = ((counts[idx] - expected[idx]) ** 2 / expected[idx]).sum()
    dof = idx.size - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


def test_importance_weights_are_normalised_and_clipped():
    rep = fill(rows=30, iterations=30)
    idx = np.flatnonzero(np.asarray(R.sampleable(rep)).reshape(-1))
    priorities = np.linspace(0.01, 10.0, idx.size).astype(np.float32)
    rep = R.update_priorities(rep, jnp.asarray(idx, jnp.int32), jnp.asarray(priorities))
    got, weights = R.sample(rep, jax.random.PRNGKey(3), 256, 1.0, 1.0, 0.1)
    p = np.zeros(rep.priority.size)
    p[idx] = priorities
    prob = p[np.asarray(got)] / p.sum()
    raw = (idx.size * prob) ** -1.0
    np.testing.assert_allclose(weights, np.clip(raw / raw.max(), 0.1, 1.0), rtol=1e-4)
    assert float(weights.min()) >= 0.1 and float(weights.max()) == pytest.approx(1.0)


def test_new_rows_enter_with_the_largest_priority_currently_stored():
    rep = fill(rows=30, iterations=10)
    add_row = lambda r, i, last: R.add(  # noqa: E731
        r, jnp.int32(i), jnp.zeros((2, 1)), jnp.zeros((2,), jnp.int32), jnp.zeros((2,)), jnp.zeros((2,), bool),
        jnp.array([False, last]), jnp.zeros((2,), bool))
    rep = R.update_priorities(rep, jnp.array([0, 1], jnp.int32), jnp.array([7.5, 0.2]))
    rep = add_row(rep, 10, True)
    np.testing.assert_allclose(rep.priority[10], [7.5, 0.0])  # a final observation is never a start
    # Once the spike is rewritten, new rows no longer inherit it.
    rep = R.update_priorities(rep, jnp.array([0, 20], jnp.int32), jnp.array([0.5, 0.5]))
    rep = add_row(rep, 11, False)
    np.testing.assert_allclose(rep.priority[11], [1.0, 1.0])  # the initial priority of untouched rows


def test_rows_whose_window_is_not_written_yet_are_never_sampled():
    rep = fill(rows=200, iterations=50)
    min_age = 6
    got, _ = R.sample(rep, jax.random.PRNGKey(0), 512, 1.0, 1.0, 0.1, min_age=min_age)
    steps = np.asarray(rep.step).reshape(-1)[np.asarray(got)]
    assert steps.max() <= 49 - min_age
    assert steps.min() >= 0
