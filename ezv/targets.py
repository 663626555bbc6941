"""Learning targets over a sampled window (reference §4), as pure array functions.

Positions k = 0..K of a window are the unroll; positions up to K + n supply n-step
bootstraps. All functions take [B, P] window fields (see `ezv.replay.Window`).

Episode ends follow the stored flags, never storage boundaries: a truncated episode
bootstraps from its stored final observation, a terminated one does not, and a window
that reaches the newest written row bootstraps from that row (reference §0: "never drop
the n-step bootstrap at an arbitrary storage boundary").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ezv.replay import Window


def transition_ok(w: Window) -> jax.Array:
    """[B, P-1]: a stored transition leaves position i and reaches position i + 1."""
    return ~w.last[:, :-1] & w.present[:, 1:]


def unroll_mask(w: Window, unroll_steps: int) -> jax.Array:
    """[B, K+1]: position k is reached from position 0 by real transitions (m_0 = 1)."""
    ok = transition_ok(w)[:, :unroll_steps]
    return jnp.concatenate([jnp.ones_like(ok[:, :1]), jnp.cumprod(ok, axis=1).astype(bool)], axis=1)


def n_step_returns(
    w: Window, values: jax.Array, unroll_steps: int, td_steps: int, discount: float, horizon: jax.Array | None = None
) -> jax.Array:
    """[B, K+1] z_k = Σ_{j<m} γ^j r_{k+j} + γ^m v(o_{k+m}) (1 − terminal_{k+m}), m <= n.

    m is the number of consecutive stored transitions from k (at most `td_steps`, or the sample's
    own `horizon` [B] where given: `age_horizon`), so the sum stops at an episode's end
    (bootstrapping from its final observation unless it is terminal) or at the newest written
    row. `values` [B, P] are target-network values of every window position.
    """
    ok = transition_ok(w)
    out = []
    for k in range(unroll_steps + 1):
        alive = jnp.ones(ok.shape[:1], bool)
        total = jnp.zeros(ok.shape[:1], jnp.float32)
        scale = jnp.ones(ok.shape[:1], jnp.float32)
        m = jnp.zeros(ok.shape[:1], jnp.int32)
        for j in range(td_steps):
            alive = alive & ok[:, k + j]
            if horizon is not None:
                alive = alive & (j < horizon)
            total = total + jnp.where(alive, scale * w.reward[:, k + j], 0.0)
            scale = jnp.where(alive, scale * discount, scale)
            m = m + alive
        boot = jnp.take_along_axis(values[:, k:], m[:, None], axis=1)[:, 0]
        terminal = jnp.take_along_axis(w.terminal[:, k:], m[:, None], axis=1)[:, 0]
        out.append(total + scale * jnp.where(terminal, 0.0, boot))
    return jnp.stack(out, axis=1)


def reward_targets(w: Window, unroll_steps: int, value_prefix: bool, horizon: int) -> jax.Array:
    """[B, K] targets of the reward head after unroll steps 1..K.

    Per-step reward r_{k-1}, or (value prefix) the undiscounted running sum of rewards since
    the last LSTM reset, which happens every `horizon` unroll steps.
    """
    rewards = w.reward[:, :unroll_steps]
    if not value_prefix:
        return rewards
    out = []
    for k in range(1, unroll_steps + 1):
        start = (k - 1) // horizon * horizon
        out.append(rewards[:, start:k].sum(axis=1))
    return jnp.stack(out, axis=1)


def age_horizon(
    sample_step: jax.Array, iteration: jax.Array, num_envs: int, td_steps: int, age_env_steps_per_step: int
) -> jax.Array:
    """[B] EZ-V1's off-policy correction (`reanalyze_worker.py`): a sample `age` env steps old
    bootstraps after n = clip(td_steps − ⌊age / age_env_steps_per_step⌋, 1, td_steps) steps, so old
    data, collected by an older policy, leans on the target network's value sooner."""
    age = (iteration - 1 - sample_step) * num_envs
    return jnp.clip(td_steps - age // age_env_steps_per_step, 1, td_steps).astype(jnp.int32)


def use_td_target(
    sample_step: jax.Array,
    iteration: jax.Array,
    updates: jax.Array,
    num_envs: int,
    start_updates: int,
    recent_env_steps: int,
) -> jax.Array:
    """[B] the mixed value target's choice (reference §4): TD before T1 updates and for the
    newest T2 transitions, the search value (SVE) otherwise. `sample_step` is the iteration
    that wrote the sample's first position; `iteration` counts the acting steps taken, so the
    newest row (written at iteration - 1) has age 0."""
    age_env_steps = (iteration - 1 - sample_step) * num_envs
    return (updates < start_updates) | (age_env_steps < recent_env_steps)


def mixed_value_target(use_td: jax.Array, td: jax.Array, search_values: jax.Array, terminal: jax.Array) -> jax.Array:
    """[B, K+1]: per sample, TD targets or search values; a terminal state's value is 0."""
    sve = jnp.where(terminal, 0.0, search_values)
    return jnp.where(use_td[:, None], td, sve)
