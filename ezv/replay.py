"""On-device prioritised trajectory replay (reference §4 storage, §5 PER).

Layout: one circular store of `rows` rows per env, written in lockstep (row index =
iteration mod rows). Row r of env e holds
    obs[r]       the single observation the agent saw (uint8 frames are stored once;
                 frame stacks are rebuilt at sample time),
    action[r]    the action taken there, reward[r] the reward of that transition,
    first[r]     obs starts an episode,
    last[r]      obs is an episode's final observation: no transition leaves this row
                 (the env's next step is the late reset, see `ezv.envs.core`),
    terminal[r]  that final observation is terminal (terminated, not truncated),
    step[r]      the iteration that wrote the row (-1: never written).
Two rows r < r' belong to one uninterrupted stream iff step[r'] - step[r] == r' - r, which
also detects rows overwritten after the store wrapped around.

Sampling draws start rows with probability ∝ priority^α among written, non-final rows
whose whole window is written (at least `min_age` newer rows, so fresh rows are not
sampled with truncated n-step targets), by stratified inverse-CDF sampling with
replacement (the reference samples without replacement, which is indistinguishable for
batch << buffer), with importance weights (N·P)^-β normalised by the batch maximum and
clipped to [min_weight, 1]. New rows enter with the largest priority currently stored.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
    obs: jax.Array  # [T, E, *obs_shape]
    action: jax.Array  # [T, E, *action_shape]
    reward: jax.Array  # [T, E]
    first: jax.Array  # [T, E] bool
    last: jax.Array  # [T, E] bool
    terminal: jax.Array  # [T, E] bool
    step: jax.Array  # [T, E] int32
    priority: jax.Array  # [T, E] float32
    max_priority: jax.Array  # () float32, the largest stored priority (new rows get it)
    cursor: jax.Array  # () int32, next row to write
    # [T, E, A] the search policy the agent acted on (only where the learner reuses it: a reanalyse
    # fraction below 1); None otherwise, so runs without it store and checkpoint nothing extra.
    policy: jax.Array | None = None

    @property
    def rows(self) -> int:
        return self.reward.shape[0]

    @property
    def num_envs(self) -> int:
        return self.reward.shape[1]


@struct.dataclass
class Window:
    """`B` windows of `P = unroll + td + 1` consecutive positions starting at sampled rows.

    obs is stacked along the last axis (oldest frame first) for image observations, with the
    episode's first frame repeated where the stack would reach before the episode start.
    present[b, k]: position k was written in the same stream as position 0 (not future data,
    not overwritten).
    """

    obs: jax.Array  # [B, P, *stacked_obs_shape]
    action: jax.Array  # [B, P, *action_shape]
    reward: jax.Array  # [B, P]
    first: jax.Array  # [B, P]
    last: jax.Array  # [B, P]
    terminal: jax.Array  # [B, P]
    present: jax.Array  # [B, P]
    step: jax.Array  # [B] iteration that wrote position 0
    policy: jax.Array | None = None  # [B, P, A] stored search policies (replays that keep them)


def init(
    rows: int,
    num_envs: int,
    obs_shape: tuple[int, ...],
    obs_dtype: Any,
    action_shape: tuple[int, ...] = (),
    action_dtype: Any = jnp.int32,
    policy_size: int = 0,
) -> Replay:
    """An empty replay; `policy_size` > 0 also keeps each row's search policy over that many actions."""
    shape = (rows, num_envs)
    return Replay(
        obs=jnp.zeros(shape + tuple(obs_shape), obs_dtype),
        action=jnp.zeros(shape + tuple(action_shape), action_dtype),
        reward=jnp.zeros(shape, jnp.float32),
        first=jnp.zeros(shape, bool),
        last=jnp.zeros(shape, bool),
        terminal=jnp.zeros(shape, bool),
        step=jnp.full(shape, -1, jnp.int32),
        priority=jnp.zeros(shape, jnp.float32),
        max_priority=jnp.float32(1.0),
        cursor=jnp.int32(0),
        policy=jnp.zeros(shape + (policy_size,), jnp.float32) if policy_size else None,
    )


def add(replay: Replay, iteration: jax.Array, obs, action, reward, first, last, terminal, policy=None) -> Replay:
    """Write one row for every env (all arguments [E, ...]; `policy` where the replay keeps policies)."""
    t = replay.cursor

    def put(buf, value):
        return jax.lax.dynamic_update_index_in_dim(buf, value.astype(buf.dtype), t, axis=0)

    return replay.replace(
        obs=put(replay.obs, obs),
        action=put(replay.action, action),
        reward=put(replay.reward, reward),
        first=put(replay.first, first),
        last=put(replay.last, last),
        terminal=put(replay.terminal, terminal),
        step=put(replay.step, jnp.full(last.shape, iteration, jnp.int32)),
        priority=put(replay.priority, jnp.where(last, 0.0, replay.max_priority)),
        cursor=(t + 1) % replay.rows,
        policy=None if replay.policy is None else put(replay.policy, policy),
    )


def newest_step(replay: Replay) -> jax.Array:
    """The iteration that wrote the newest row (-1 before the first write)."""
    return replay.step[(replay.cursor - 1) % replay.rows, 0]


def sampleable(replay: Replay, min_age: int = 0) -> jax.Array:
    """[T, E] rows a window may start at: written at least `min_age` iterations before the
    newest row, and not an episode's final observation."""
    return (replay.step >= 0) & (replay.step <= newest_step(replay) - min_age) & ~replay.last


def sample(
    replay: Replay,
    key: jax.Array,
    batch_size: int,
    alpha: float,
    beta: float,
    min_weight: float,
    min_age: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Prioritised start rows -> (flat indices into [T*E] (row-major), importance weights [B])."""
    valid = sampleable(replay, min_age).reshape(-1)
    p = jnp.where(valid, jnp.power(jnp.maximum(replay.priority.reshape(-1), 0.0), alpha), 0.0)
    cdf = jnp.cumsum(p)
    total = cdf[-1]
    # Stratified: one uniform draw in each of `batch_size` equal slices of the total mass.
    u = (jnp.arange(batch_size) + jax.random.uniform(key, (batch_size,))) / batch_size * total
    # Strictly below the total mass, `searchsorted(right)` lands on a slot with p > 0 (cdf is
    # monotone), even when round-off pushes the last stratum's draw up to `total`.
    u = jnp.minimum(u, jnp.nextafter(total, 0.0))
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, p.shape[0] - 1)
    prob = p[idx] / jnp.maximum(total, 1e-30)
    n_valid = jnp.sum(valid)
    weights = jnp.power(jnp.maximum(n_valid * prob, 1e-30), -beta)
    weights = jnp.clip(weights / jnp.max(weights), min_weight, 1.0)
    # No sampleable row yet (config validation prevents it): zero weights, so no update moves.
    return idx.astype(jnp.int32), jnp.where(total > 0, weights, 0.0)


def gather(replay: Replay, flat_idx: jax.Array, positions: int, frame_stack: int) -> Window:
    """The windows of `positions` rows starting at the sampled rows, with frame stacks rebuilt."""
    T, E = replay.rows, replay.num_envs
    row0, env = flat_idx // E, flat_idx % E
    before = frame_stack - 1
    offsets = jnp.arange(-before, positions)  # [S-1+P]
    rows = (row0[:, None] + offsets[None, :]) % T  # [B, S-1+P]
    env_b = env[:, None]

    def take(buf):
        return buf[rows, env_b]

    step = take(replay.step)
    step0 = replay.step[row0, env]
    present = step == step0[:, None] + offsets[None, :]
    first = take(replay.first)
    obs = take(replay.obs)

    if frame_stack > 1:
        # Earliest offset q <= 0 still in position 0's episode: rows q..0 present, no episode
        # start strictly after q. Stack slots before it repeat the episode's first frame.
        ok = jnp.ones_like(present[:, before])
        start = jnp.full(flat_idx.shape, before, jnp.int32)  # index into the gathered axis
        for i in range(before - 1, -1, -1):
            ok = ok & present[:, i] & ~first[:, i + 1]
            start = jnp.where(ok, i, start)
        frame_idx = jnp.arange(positions)[:, None] + jnp.arange(frame_stack)[None, :]  # [P, S]
        frame_idx = jnp.maximum(frame_idx[None], start[:, None, None])  # [B, P, S]
        frames = jax.vmap(lambda o, i: o[i])(obs, frame_idx)  # [B, P, S, *obs_shape]
        frames = jnp.moveaxis(frames, 2, -2)  # [B, P, H, W, S, C]
        stacked = frames.reshape(frames.shape[:-2] + (-1,))
    else:
        stacked = obs[:, before:]

    sl = slice(before, None)
    return Window(
        obs=stacked,
        action=take(replay.action)[:, sl],
        reward=take(replay.reward)[:, sl],
        first=first[:, sl],
        last=take(replay.last)[:, sl],
        terminal=take(replay.terminal)[:, sl],
        present=present[:, sl],
        step=step0,
        policy=None if replay.policy is None else take(replay.policy)[:, sl],
    )


def update_priorities(replay: Replay, flat_idx: jax.Array, priorities: jax.Array) -> Replay:
    """Write new priorities; new rows will enter at the largest priority now stored (as the
    reference's insertion at `priorities.max()`), so one early spike does not persist."""
    priority = replay.priority.reshape(-1).at[flat_idx].set(priorities.astype(jnp.float32))
    priority = priority.reshape(replay.priority.shape)
    return replay.replace(priority=priority, max_priority=jnp.max(priority))


def stack_frames(history: jax.Array) -> jax.Array:
    """[E, S, H, W, C] frame history (oldest first) -> [E, H, W, S*C] network input."""
    moved = jnp.moveaxis(history, 1, -2)
    return moved.reshape(moved.shape[:-2] + (-1,))

