"""Execution delays (Delayed-EfficientZero, family reference §A.3) as a wrapper over any `VecEnv`.

    env = delayed(ezv.envs.make("CartPole-v1", 8), max_delay=15, stochastic=True)
    state, ts = env.reset(key)        # ts.delay: the delay, the pending actions, the executed action
    state, ts = env.step(state, a)    # a is decided now and executes ts.delay.delay steps later

Each env keeps a queue of its last M = `max_delay` decisions and the delay each was decided under.
A step appends the new decision (decided under the current delay d) and executes **the newest
decision that is due**: the one decided at s with delay δ is due from s + δ on. So a constant delay
is a FIFO with lag M, a delay that shrinks skips the decisions overtaken by newer due ones, and a
delay that grows (nothing new due) repeats the previous executed action. Before each decision the
delay takes one step of a lazy random walk: −1 or +1 with probability `change_prob` each, clipped to
[0, M] (`stochastic`) or fixed at M, starting at M. Each env has its own walk, which goes on across
its episodes. A new episode's queue holds M uniformly random actions, each decided under delay M (in
order, unless a shrinking delay lets a new decision overtake them); the agent may replace them by a
plan (`with_queue`).

The delay and the queue are observed (the paper's observed-delay setting): `TimeStep.delay` gives
the agent the delay d of its next decision and `pending[ix]`, for ix < d, the queued action that
will execute ix steps from now. That view is exact: a later decision cannot become due before the
current one because the delay moves by at most one per step.

Everything is pure JAX: the wrapper steps inside the compiled loop, vmaps over seeds and its state
checkpoints with the run (over envpool, whose envs restart on resume, the walk restarts at M too).
Actions are the inner env's own (discrete ids or env-space vectors).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from ezv.envs.core import TimeStep, VecEnv


DELAY_STREAM = 0x0DE1A7  # folded into the reset key for the wrapper's own randomness


@struct.dataclass
class DelayObservation:
    """What a delayed env lets the agent observe, per env (in `TimeStep.delay`).

    delay:    [N] int32, the delay d of the next decision: it will execute d steps from now.
    pending:  [N, M, *action] the queued actions; entry ix < d executes ix steps from now.
    executed: [N, *action] the action this step executed (a fresh episode's first step: zeros).
    """

    delay: jax.Array
    pending: jax.Array
    executed: jax.Array


@struct.dataclass
class DelayState:
    inner: Any
    queue: jax.Array  # [N, M, *action] the last M decisions, oldest first
    queue_delays: jax.Array  # [N, M] int32, the delay each was decided under
    delay: jax.Array  # [N] int32, the delay of the next decision
    key: jax.Array


def executed_index(queue_delays: jax.Array) -> jax.Array:
    """[N] which entry of a window of M + 1 decisions (oldest first, the newest decided now) executes:
    the newest one that is due. Entry i was decided M − i steps ago, so it is due when δ_i ≤ M − i;
    the oldest always is (δ ≤ M)."""
    window = queue_delays.shape[-1]
    i = jnp.arange(window)
    due = queue_delays + i <= window - 1
    return jnp.max(jnp.where(due, i, 0), axis=-1)


def pending_view(queue: jax.Array, queue_delays: jax.Array) -> jax.Array:
    """[N, M, *action]: entry ix is the queued action that executes ix steps from now, for ix below the
    current delay. At that step the window holds entries j ≥ ix of today's queue (and newer decisions,
    none of them due yet); entry j is due by then when δ_j + j − M ≤ ix."""
    m = queue_delays.shape[-1]
    if m == 0:
        return queue
    ix, j = jnp.arange(m)[:, None], jnp.arange(m)[None, :]
    due = (j >= ix)[None] & (queue_delays[:, None, :] + j - m <= ix)  # [N, ix, j]
    newest = jnp.max(jnp.where(due, j, 0), axis=-1)  # [N, M]; entry j = ix is always due
    return jnp.take_along_axis(queue, newest.reshape(newest.shape + (1,) * (queue.ndim - 2)), axis=1)


def walk_delay(key: jax.Array, delay: jax.Array, change_prob: float, low: int, high: int) -> jax.Array:
    """One step of the lazy ±1 walk: down with probability p, up with probability p, clipped to [low, high].
    Its stationary law is uniform on {low..high} (detailed balance with equal rates both ways)."""
    u = jax.random.uniform(key, delay.shape)
    step = jnp.where(u < change_prob, -1, jnp.where(u >= 1.0 - change_prob, 1, 0))
    return jnp.clip(delay + step, low, high).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class DelayedVecEnv(VecEnv):
    """A `VecEnv` whose actions execute after a (possibly changing) delay; see the module docstring.
    `with_queue(state, actions, where)` puts a plan of M actions (decided under delay M) in the queues
    of the envs `where` (an agent's planned initial queue)."""

    max_delay: int = 0
    stochastic: bool = False
    change_prob: float = 0.2
    with_queue: Callable[[DelayState, jax.Array, jax.Array], DelayState] | None = None


def delayed(env: VecEnv, max_delay: int, stochastic: bool = False, change_prob: float = 0.2) -> DelayedVecEnv:
    """`env` with execution delays up to `max_delay` agent steps (constant unless `stochastic`)."""
    if max_delay < 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}.")
    if not 0.0 <= change_prob <= 0.5:
        raise ValueError(f"change_prob must be in [0, 0.5] (the probability of each of −1 and +1), got {change_prob}.")
    m, n = max_delay, env.num_envs
    low = 0 if stochastic else m

    def fresh_queue(key: jax.Array) -> jax.Array:
        """[N, M, *action]: M uniformly random actions per env."""
        if m == 0:
            probe = env.random_actions(key)
            return jnp.zeros((n, 0) + probe.shape[1:], probe.dtype)
        return jnp.moveaxis(jax.vmap(env.random_actions)(jax.random.split(key, m)), 0, 1)

    def observe(state: DelayState, executed: jax.Array) -> DelayObservation:
        return DelayObservation(delay=state.delay, pending=pending_view(state.queue, state.queue_delays),
                                executed=executed)

    def reset(key: jax.Array) -> tuple[DelayState, TimeStep]:
        # The inner env resets with `key` itself: the same episodes at every delay (and at delay 0 the
        # wrapped env is the env itself, step for step); the wrapper's own draws come from a derived key.
        inner, ts = env.reset(key)
        key, queue_key, walk_key = jax.random.split(jax.random.fold_in(key, DELAY_STREAM), 3)
        queue = fresh_queue(queue_key)
        state = DelayState(inner=inner, queue=queue, queue_delays=jnp.full((n, m), m, jnp.int32),
                           delay=walk_delay(walk_key, jnp.full((n,), m, jnp.int32), change_prob, low, m), key=key)
        return state, ts.replace(delay=observe(state, jnp.zeros_like(env.random_actions(queue_key))))

    def step(state: DelayState, action: jax.Array) -> tuple[DelayState, TimeStep]:
        key, queue_key, walk_key = jax.random.split(state.key, 3)
        window = jnp.concatenate([state.queue, action[:, None].astype(state.queue.dtype)], axis=1)
        window_delays = jnp.concatenate([state.queue_delays, state.delay[:, None]], axis=1)
        index = executed_index(window_delays)
        executed = jnp.take_along_axis(window, index.reshape((n, 1) + (1,) * (window.ndim - 2)), axis=1)[:, 0]
        inner, ts = env.step(state.inner, executed)
        # A new episode (its first step ignored the action) starts from a fresh queue; the walk goes on.
        fresh = ts.first.reshape((n, 1) + (1,) * (window.ndim - 2))
        queue = jnp.where(fresh, fresh_queue(queue_key), window[:, 1:])
        queue_delays = jnp.where(ts.first[:, None], m, window_delays[:, 1:])
        executed = jnp.where(ts.first.reshape((n,) + (1,) * (executed.ndim - 1)), jnp.zeros_like(executed), executed)
        delay = walk_delay(walk_key, state.delay, change_prob, low, m)
        new = DelayState(inner=inner, queue=queue, queue_delays=queue_delays, delay=delay, key=key)
        return new, ts.replace(delay=observe(new, executed))

    def with_queue(state: DelayState, actions: jax.Array, where: jax.Array) -> DelayState:
        mask = where.reshape((n, 1) + (1,) * (actions.ndim - 2))
        return state.replace(queue=jnp.where(mask, actions.astype(state.queue.dtype), state.queue),
                             queue_delays=jnp.where(where[:, None], m, state.queue_delays))

    return DelayedVecEnv(spec=env.spec, num_envs=n, reset=reset, step=step, pure=env.pure, max_delay=m,
                         stochastic=stochastic, change_prob=change_prob, with_queue=with_queue)
