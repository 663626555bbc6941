"""The network, its search and the env's action space behind one interface, for both action kinds.

    model = EZModel(cfg, spec)                      # no envs needed
    variables = model.init_variables(key)           # {"params", "batch_stats"}
    out = model.search(variables, key, obs)                        # acting, reanalysis (with noise)
    actions = model.greedy_action(variables, obs, key)             # evaluation, exported agents

Discrete and continuous actions differ only in which model functions the search calls
(`search.ModelFns` or `search.ContinuousModelFns`, chosen once here from the action space); every
caller (acting, the learner, evaluation, exported agents, benchmarks) goes through this class.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import mctx

from ezv import gaussian
from ezv.config import Config
from ezv.envs.core import Discrete, EnvSpec
from ezv.envs.delay import DelayObservation
from ezv.forward import plan_queue
from ezv.networks import EZNet, torch_default_init
from ezv.search import ContinuousModelFns, ModelFns, SearchOutput


class EZModel:
    """Static facts of the network and its search (shapes, simulation counts) and their pure functions."""

    def __init__(self, cfg: Config, spec: EnvSpec):
        self.cfg, self.spec = cfg, spec
        self.frame_stack = spec.frame_stack
        space = spec.action_space
        discrete = isinstance(space, Discrete)
        num_actions = space.n if discrete else None
        self.num_actions = num_actions  # None: continuous actions
        self.num_simulations = cfg.search.simulations_for(num_actions)
        # The tree-wide Q normalisation reads each node's path from its embedding (no tree walks).
        tree_rule = cfg.search.kind == "gumbel" and cfg.search.q_normalisation == "tree"
        path_depth = self.num_simulations if tree_rule else 0
        if discrete:
            self.action_shape, self.action_dtype = (), jnp.int32
            self.net = EZNet(cfg.network, num_actions=space.n)
            self.fns = ModelFns(self.net, cfg.network, cfg.learner.discount, path_depth)
            self.considered = cfg.search.considered_for(space.n)
            self.policy_loss_kind = None
        else:
            self.action_shape, self.action_dtype = (space.dim,), jnp.float32
            self.net = EZNet(cfg.network, num_actions=None, action_dim=space.dim)
            self.fns = ContinuousModelFns(self.net, cfg.network, cfg.learner.discount, cfg.search, path_depth)
            self.considered = cfg.search.num_sampled_actions
            kind = cfg.learner.continuous_policy_loss
            self.policy_loss_kind = ("full" if space.dim == 1 else "simple") if kind == "auto" else kind
        self.value_support = cfg.network.value_support
        self.reward_support = cfg.network.reward_support

    @property
    def stacked_obs_shape(self) -> tuple[int, ...]:
        """What the network takes per env: the observation with `frame_stack` frames on the last axis."""
        shape = self.spec.obs_shape
        if self.frame_stack == 1:
            return shape
        return shape[:-1] + (shape[-1] * self.frame_stack,)

    def init_variables(self, key: jax.Array) -> dict[str, Any]:
        """Fresh {"params", "batch_stats"} of the networks."""
        obs = jnp.zeros((1,) + self.stacked_obs_shape, self.spec.obs_dtype)
        variables = self.net.init(key, obs, jnp.zeros((1,) + self.action_shape, self.action_dtype))
        params = variables["params"]
        if self.cfg.network.init == "torch":
            params = torch_default_init(params, jax.random.fold_in(key, 1))
        return {"params": params, "batch_stats": variables.get("batch_stats", {})}

    def decode_value(self, value_logits: jax.Array) -> jax.Array:
        return self.fns.decode_value(value_logits)

    # --- search ---------------------------------------------------------------------------

    def search(
        self, variables: Any, key: jax.Array, obs: jax.Array, evaluation: bool = False,
        delay: DelayObservation | None = None,
    ) -> SearchOutput:
        """Search from stacked observations with the acting and reanalysis settings, or for `evaluation`:
        no Gumbel or Dirichlet noise, every continuous candidate drawn from π (no widened samples).
        `delay` (a delayed env's observation): search from the latent predicted after the pending actions."""
        key, root_key = self.fns.split_root_key(key)
        through = None if delay is None else (self.from_env(delay.pending), delay.delay)
        root = self.fns.root(variables, obs, root_key, widen=not evaluation, through=through)
        return self.search_roots(variables, key, root, evaluation)

    def plan_queue(self, variables: Any, key: jax.Array, obs: jax.Array, length: int,
                   evaluation: bool = False) -> jax.Array:
        """[B, length, ...] env actions: Delayed-EZ's planned initial queue from these observations, each
        action the search's own pick (pUCT: the most visited) from the latent the plan has reached."""
        fns = self.fns

        def search_from(latent, step_key):
            search_key, root_key = fns.split_root_key(step_key)
            root = fns.root_at(variables, latent, root_key, widen=not evaluation)
            return self.search_roots(variables, search_key, root, evaluation).action

        latent = self.net.apply(variables, obs, method=EZNet.represent)
        return self.to_env(plan_queue(search_from, functools.partial(fns.next_latent, variables), latent, key, length))

    def roots_from_outputs(
        self, latent: jax.Array, logits: jax.Array, value: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, mctx.RootFnOutput]:
        """(the search's key, roots) from network outputs already computed (the learner's reanalysis)."""
        key, root_key = self.fns.split_root_key(key)
        return key, self.fns.root_from_outputs(latent, logits, value, root_key, widen=True)

    def search_roots(
        self, variables: Any, key: jax.Array, root: mctx.RootFnOutput, evaluation: bool = False
    ) -> SearchOutput:
        return self.fns.search_roots(
            variables, key, root, cfg=self.cfg.search, num_simulations=self.num_simulations,
            max_considered_actions=self.considered, evaluation=evaluation,
        )

    def policy_target_fields(self, search: SearchOutput, batch_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        return self.fns.policy_target_fields(search, batch_shape)

    # --- acting ---------------------------------------------------------------------------

    def to_env(self, action: jax.Array) -> jax.Array:
        """The search's action as the env takes it (continuous: policy space [-1, 1] -> the env's box)."""
        space = self.spec.action_space
        if isinstance(space, Discrete):
            return action
        return gaussian.to_env(action, space.low, space.high)

    def from_env(self, action: jax.Array) -> jax.Array:
        """An env action as the model takes it (the inverse of `to_env`)."""
        space = self.spec.action_space
        if isinstance(space, Discrete):
            return action
        return gaussian.from_env(action, space.low, space.high)

    def greedy_action(
        self, variables: Any, obs: jax.Array, key: jax.Array, delay: DelayObservation | None = None
    ) -> jax.Array:
        """The evaluation policy: the search without noise (pUCT: the most visited action; continuous:
        K candidates from π), as env actions. Used by in-training evaluation, `ezv.evaluate` and exported agents.
        `delay`: plan through a delayed env's pending actions (`search`)."""
        return self.to_env(self.search(variables, key, obs, evaluation=True, delay=delay).action)
