"""Planning through the pending actions of a delayed env (Delayed-EfficientZero, family reference §A.4).

With an execution delay d, the action decided now executes d steps from now, after the d actions the
env already holds (`ezv.envs.delay`). The agent searches from the latent its model predicts for that
step: it encodes the current observation and rolls the dynamics through the pending actions
(`unroll_pending`), then runs the run's search (Gumbel or pUCT) from there. The network itself learns
the undelayed MDP of executed actions, so the same weights serve every delay.

The root of that search gets a fresh value-prefix state (prefix 0, a new LSTM carry), as every search
root and the start of every learner unroll have: the tree's rewards are the ones after the predicted
state, which is what the value-prefix head learned to predict from a start state. Delayed-EZ's code kept
the unroll's LSTM state at a root whose prefix it set to 0, which counts the pending steps' predicted
rewards into the first-level rewards until the tree's first LSTM reset.

A new episode may start from a planned queue (`plan_queue`): search from the first latent, take the
search's action, step the dynamics with it and search again, M times (Delayed-EZ's planned queue).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def unroll_pending(
    next_latent: Callable[[Any, jax.Array], Any], latent: Any, pending: jax.Array, delay: jax.Array
) -> Any:
    """The latent after each env's first `delay` pending actions.

    next_latent(latent, actions [B, ...]) -> latent: one dynamics step; pending [B, M, ...] (model
    actions, entry ix executes ix steps from now); delay [B] int32 in 0..M. M steps are taken for
    every env (one compiled shape); an env keeps its latent once its own delay is reached."""
    steps = pending.shape[1]

    def body(z, inputs):
        ix, actions = inputs
        moved = next_latent(z, actions)
        keep = ix < delay
        return jax.tree.map(lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
                            moved, z), None

    latent, _ = jax.lax.scan(body, latent, (jnp.arange(steps), jnp.moveaxis(pending, 1, 0)))
    return latent


def plan_queue(search_from: Callable[[Any, jax.Array], jax.Array], next_latent: Callable[[Any, jax.Array], Any],
               latent: Any, key: jax.Array, length: int) -> jax.Array:
    """[B, length, ...] model actions: from `latent`, `length` times, the action `search_from(latent, key)`
    picks, then one dynamics step with it."""

    def body(z, step_key):
        action = search_from(z, step_key)
        return next_latent(z, action), action

    _, actions = jax.lax.scan(body, latent, jax.random.split(key, length))
    return jnp.moveaxis(actions, 0, 1)
