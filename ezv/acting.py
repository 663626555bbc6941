"""How the acting envs' actions come from a search (family reference B.2, B.6), beyond the search's own pick.

    rule = ActingRule(cfg, model)
    if rule.active:
        out = rule.apply(key, out, iteration, updates)   # actions to execute (and the policy to store)

EZ-V2 executes the Gumbel search's choice and needs none of this. EZ-V1 samples from the pUCT visit
counts with a temperature that falls with the collection phase's updates, after uniform random actions
before the learner starts; the MuZero card takes the most visited action, ε-greedy with ε falling over
env steps. Each part is a static switch, so a config without them compiles exactly as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ezv.config import Config
from ezv.search import SearchOutput


def visit_temperature(temperatures, switches, updates: jax.Array, collection_updates: int) -> jax.Array:
    """T = temperatures[i] once `updates` reach switches[i-1] x the collection phase's updates."""
    temperature = jnp.float32(temperatures[0])
    for value, switch in zip(temperatures[1:], switches):
        temperature = jnp.where(updates >= switch * collection_updates, jnp.float32(value), temperature)
    return temperature


def linear_epsilon(start: float, final: float, over_env_steps: int, env_steps: jax.Array) -> jax.Array:
    """ε from `start` to `final` linearly over `over_env_steps` env steps, `final` after."""
    progress = jnp.clip(env_steps / max(over_env_steps, 1), 0.0, 1.0)
    return jnp.float32(start) + (final - start) * progress


def sample_visits(key: jax.Array, visit_policy: jax.Array, temperature: jax.Array) -> jax.Array:
    """[B] a ∝ N(a)^(1/T) from visit distributions [B, A]; T = 0 takes the most visited action."""
    logits = jnp.where(visit_policy > 0, jnp.log(jnp.maximum(visit_policy, 1e-30)), -jnp.inf)
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(visit_policy, axis=-1)).astype(jnp.int32)


class ActingRule:
    """The acting settings of a run (`cfg.acting`) as one function of the search output and the state's counters."""

    def __init__(self, cfg: Config, action_shape: tuple[int, ...], num_actions: int | None):
        """`num_actions` None: continuous actions of `action_shape` in the policy space [-1, 1]."""
        self.cfg, self.acting = cfg, cfg.acting
        self.action_shape, self.num_actions = action_shape, num_actions
        self.from_visits = cfg.search.kind == "puct"
        self.epsilon_greedy = self.acting.epsilon_start > 0 or self.acting.epsilon_final > 0
        self.active = self.from_visits or self.epsilon_greedy or self.acting.random_before_learning

    def uniform(self, key: jax.Array, batch: int) -> jax.Array:
        if self.num_actions is not None:
            return jax.random.randint(key, (batch,), 0, self.num_actions, jnp.int32)
        return jax.random.uniform(key, (batch,) + self.action_shape, jnp.float32, -1.0, 1.0)

    def apply(self, key: jax.Array, out: SearchOutput, iteration: jax.Array, updates: jax.Array) -> SearchOutput:
        """`out` with the actions to execute, and before learning (with `random_before_learning`) the uniform
        policy EZ-V1 stores for its random actions (it replaces the visit counts by ones)."""
        out = out.replace(action=self.choose(key, out, iteration, updates))
        if self.acting.random_before_learning:
            uniform = jnp.full_like(out.policy, 1.0 / out.policy.shape[-1])
            out = out.replace(policy=jnp.where(updates == 0, uniform, out.policy))
        return out

    def choose(self, key: jax.Array, out: SearchOutput, iteration: jax.Array, updates: jax.Array) -> jax.Array:
        """The actions to execute. `iteration`: acting steps taken (env steps = x num_envs); `updates`:
        learner updates applied."""
        action = out.action
        batch = action.shape[0]
        visit_key, epsilon_key, uniform_key = jax.random.split(key, 3)
        if self.from_visits:
            temperature = visit_temperature(
                self.acting.temperatures, self.acting.temperature_switches, updates, self.cfg.collection_updates
            )
            action = sample_visits(visit_key, out.policy, temperature)
        take_random = jnp.zeros((batch,), bool)
        if self.epsilon_greedy:
            epsilon = linear_epsilon(self.acting.epsilon_start, self.acting.epsilon_final,
                                     self.acting.epsilon_env_steps, iteration * self.cfg.num_envs)
            take_random = jax.random.uniform(epsilon_key, (batch,)) < epsilon
        if self.acting.random_before_learning:
            take_random = take_random | (updates == 0)
        if not (self.epsilon_greedy or self.acting.random_before_learning):
            return action  # no random action can be taken: draw none
        mask = take_random.reshape((batch,) + (1,) * (action.ndim - 1))
        return jnp.where(mask, self.uniform(uniform_key, batch), action)
