"""Gumbel MuZero search on mctx (reference §3), EZ-V1's pUCT search (`ezv.puct`), and the model
functions both call.

Discrete actions use `mctx.gumbel_muzero_policy` with completed Q-values by mixed value
(c_visit 50, c_scale 0.1), normalised per tree as the reference does or per node as mctx
does (`SearchConfig.q_normalisation`, see `qtransforms.py`). A known difference from the
reference's C++ tree (§3.5), kept as mctx does it: the mixed value uses the raw network
value with N = Σ child visits.

The value prefix is carried through `recurrent_fn`: the embedding holds the latent, the
LSTM carry, the parent's value prefix and the depth. A node at depth d with d % horizon == 0
is a reset node: its children start a fresh LSTM carry and their reward is their own value
prefix. This is EZ-V1's rule (the parent's reset flag), which the reference's V2 tree
replaced by the child's flag, mis-attributing rewards at depth >= 5 (reference §0).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mctx
from flax import struct

from ezv import gaussian
from ezv.config import NetworkConfig, SearchConfig
from ezv.networks import EZNet, initial_lstm_carry, reset_lstm_carry
from ezv.forward import unroll_pending
from ezv.puct import puct_search
from ezv.qtransforms import at_depth, make_qtransform


@struct.dataclass
class SearchOutput:
    action: jax.Array  # [B] int32, or [B, dim] policy-space action (continuous): the action to execute
    policy: jax.Array  # [B, A] or [B, K]: improved policy π′ = softmax(logits + σ(completed Q)), the policy target
    value: jax.Array  # [B] root value after search: mean of v(s0) and the simulation returns (SVE)
    raw_value: jax.Array  # [B] the network's value v(s0)
    candidates: jax.Array | None = None  # [B, K, dim] the sampled root actions π′ is over (continuous)
    tree: mctx.Tree | None = None  # the search tree (continuous; for inspection, unused by the loop)


@struct.dataclass
class Embedding:
    latent: jax.Array
    lstm_carry: Any
    value_prefix: jax.Array  # [B] value prefix predicted for this node (0 at the root)
    depth: jax.Array  # [B] int32, 0 at the root
    # Continuous actions: [B, K, dim] the actions of this node's K child slots. mctx sees actions
    # as slot indices; `recurrent_fn` gathers the real action from the parent's embedding.
    children_actions: jax.Array | None = None
    # With `path_depth`: [B, path_depth + 1] the discounted reward from the root to this node's
    # ancestor at each depth (this node at index `depth`) and the discount accumulated to it, for the
    # tree-wide Q normalisation (qtransforms.tree_value_range_from_paths).
    path_return: jax.Array | None = None
    path_discount: jax.Array | None = None


def completed_q_transform(cfg: SearchConfig) -> Callable:
    return make_qtransform(cfg.q_normalisation, cfg.value_scale, cfg.maxvisit_init)


def gumbel_search(
    params: Any,
    key: jax.Array,
    root: mctx.RootFnOutput,
    recurrent_fn: mctx.RecurrentFn,
    *,
    cfg: SearchConfig,
    num_simulations: int,
    max_considered_actions: int,
    gumbel_scale: float | jax.Array,
) -> SearchOutput:
    """One batched Gumbel MuZero search; `gumbel_scale` 0 gives the deterministic evaluation search."""
    out = mctx.gumbel_muzero_policy(
        params=params,
        rng_key=key,
        root=root,
        recurrent_fn=recurrent_fn,
        num_simulations=num_simulations,
        max_num_considered_actions=max_considered_actions,
        gumbel_scale=gumbel_scale,
        qtransform=completed_q_transform(cfg),
    )
    tree = out.search_tree
    return SearchOutput(
        action=out.action.astype(jnp.int32),
        policy=out.action_weights,
        value=tree.node_values[:, tree.ROOT_INDEX],
        raw_value=tree.raw_values[:, tree.ROOT_INDEX],
    )


def visit_count_search(
    params: Any, key: jax.Array, root: mctx.RootFnOutput, recurrent_fn: mctx.RecurrentFn, *,
    cfg: SearchConfig, num_simulations: int, evaluation: bool,
) -> SearchOutput:
    """EZ-V1's pUCT search (`ezv.puct`): the policy (target) is the root's visit distribution and the
    action its argmax (acting draws from the visits instead, `ezv.acting`); Dirichlet noise unless `evaluation`."""
    visits, tree = puct_search(
        params, key, root, recurrent_fn, num_simulations=num_simulations, pb_c_init=cfg.pb_c_init,
        pb_c_base=cfg.pb_c_base, dirichlet_alpha=cfg.dirichlet_alpha,
        dirichlet_fraction=0.0 if evaluation else cfg.dirichlet_fraction,
    )
    visits = visits.astype(jnp.float32)
    return SearchOutput(
        action=jnp.argmax(visits, axis=-1).astype(jnp.int32),
        policy=visits / jnp.maximum(jnp.sum(visits, axis=-1, keepdims=True), 1.0),
        value=tree.node_values[:, tree.ROOT_INDEX],
        raw_value=tree.raw_values[:, tree.ROOT_INDEX],
    )


class ModelFns:
    """The EZ-V2 network seen by the search: root inference and `recurrent_fn`, in eval mode."""

    def __init__(self, net: EZNet, net_cfg: NetworkConfig, discount: float, path_depth: int = 0):
        """path_depth: the deepest node a search can reach (its simulation count), when embeddings
        must carry their path's returns (the tree-wide Q normalisation); 0: they do not."""
        self.net = net
        self.cfg = net_cfg
        self.discount = discount
        self.path_depth = path_depth
        self.value_support = net_cfg.value_support
        self.reward_support = net_cfg.reward_support

    def decode_value(self, value_logits: jax.Array) -> jax.Array:
        value = self.value_support.decode(value_logits)
        # DMC: the reference clips decoded values to >= 0 (rewards are non-negative there).
        return value if self.cfg.value_min is None else jnp.maximum(value, self.cfg.value_min)

    # Both action kinds share these signatures: `key` and `widen` matter only where the root
    # samples its candidate actions (ContinuousModelFns).

    def split_root_key(self, key: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(the search's key, the root's key): discrete roots draw nothing, so the search keeps `key`."""
        return key, None

    def root(
        self, variables: Any, obs: jax.Array, key: jax.Array | None = None, widen: bool = True,
        through: tuple[jax.Array, jax.Array] | None = None,
    ) -> mctx.RootFnOutput:
        """Search roots at the observations' latents, or, with `through` = (pending model actions [B, M, ...],
        delays [B]), at the latents after each env's pending actions (`ezv.forward`)."""
        latent = self.net.apply(variables, obs, method=EZNet.represent)
        if through is not None:
            latent = unroll_pending(functools.partial(self.next_latent, variables), latent, *through)
        return self.root_at(variables, latent, key, widen)

    def root_at(self, variables: Any, latent: jax.Array, key: jax.Array | None = None, widen: bool = True):
        """Search roots at these latents."""
        logits, value_logits = self.net.apply(variables, latent, method=EZNet.predict)
        return self.root_from_outputs(latent, logits, self.decode_value(value_logits), key, widen)

    def next_latent(self, variables: Any, latent: jax.Array, action: jax.Array) -> jax.Array:
        return self.net.apply(variables, latent, action, method=EZNet.next_state)

    def root_from_outputs(
        self, latent: jax.Array, logits: jax.Array, value: jax.Array, key: jax.Array | None = None, widen: bool = True
    ) -> mctx.RootFnOutput:
        """Search roots from already computed representation and prediction outputs."""
        del key, widen
        batch = latent.shape[0]
        embedding = Embedding(
            latent=latent,
            lstm_carry=initial_lstm_carry(self.cfg, batch),
            value_prefix=jnp.zeros((batch,), jnp.float32),
            depth=jnp.zeros((batch,), jnp.int32),
        )
        if self.path_depth:
            embedding = embedding.replace(
                path_return=jnp.zeros((batch, self.path_depth + 1), jnp.float32),
                path_discount=jnp.ones((batch, self.path_depth + 1), jnp.float32),
            )
        return mctx.RootFnOutput(prior_logits=logits, value=value, embedding=embedding)

    def expand(self, variables: Any, action: jax.Array, emb: Embedding):
        """One model step from a node: -> (reward, policy outputs, value, child embedding)."""
        if self.cfg.value_prefix:
            reset = emb.depth % self.cfg.lstm_horizon == 0
            carry = reset_lstm_carry(emb.lstm_carry, reset)
            parent_prefix = jnp.where(reset, 0.0, emb.value_prefix)
        else:
            carry, parent_prefix = emb.lstm_carry, jnp.zeros_like(emb.value_prefix)
        latent, carry, reward_logits = self.net.apply(variables, emb.latent, action, carry, method=EZNet.dynamics)
        predicted = self.reward_support.decode(reward_logits)
        outputs, value_logits = self.net.apply(variables, latent, method=EZNet.predict)
        reward = predicted - parent_prefix
        child = emb.replace(latent=latent, lstm_carry=carry, value_prefix=predicted, depth=emb.depth + 1)
        if self.path_depth:
            child = self.extend_path(child, emb.depth, reward)
        return reward, outputs, self.decode_value(value_logits), child

    def extend_path(self, child: Embedding, parent_depth: jax.Array, reward: jax.Array) -> Embedding:
        """The child's path: its parent's, plus its own return and discount at its depth."""
        parent_discount = at_depth(child.path_discount, parent_depth)
        own_return = at_depth(child.path_return, parent_depth) + parent_discount * reward
        own_discount = parent_discount * self.discount
        here = jnp.arange(self.path_depth + 1)[None] == (parent_depth + 1)[:, None]
        return child.replace(
            path_return=jnp.where(here, own_return[:, None], child.path_return),
            path_discount=jnp.where(here, own_discount[:, None], child.path_discount),
        )

    def recurrent_fn(self, variables: Any, key: jax.Array, action: jax.Array, emb: Embedding):
        del key
        reward, logits, value, child = self.expand(variables, action, emb)
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=jnp.full_like(reward, self.discount), prior_logits=logits, value=value
        )
        return out, child

    def search_roots(
        self, variables: Any, key: jax.Array, root: mctx.RootFnOutput, *, cfg: SearchConfig, num_simulations: int,
        max_considered_actions: int, evaluation: bool,
    ) -> SearchOutput:
        """The configured search kind from these roots; `evaluation` turns its exploration noise off."""
        if cfg.kind == "puct":
            return visit_count_search(
                variables, key, root, self.recurrent_fn, cfg=cfg, num_simulations=num_simulations, evaluation=evaluation
            )
        return gumbel_search(
            variables, key, root, self.recurrent_fn, cfg=cfg, num_simulations=num_simulations,
            max_considered_actions=max_considered_actions, gumbel_scale=0.0 if evaluation else cfg.gumbel_scale,
        )

    def policy_target_fields(self, search: SearchOutput, batch_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """What the policy loss needs beyond π′ (continuous: the candidates π′ is over, the chosen action)."""
        del search, batch_shape
        return {}


# --- continuous actions: sampling-based Gumbel search (reference §3.3) ---------------------

# Prior logit of an unsampled child slot. Finite, so softmaxes and mctx's arithmetic stay NaN-free.
MASKED_LOGIT = -1e9


def masked_interior_selection(rng_key, tree: mctx.Tree, node_index, depth, *, qtransform: Callable) -> jax.Array:
    """mctx's deterministic Gumbel interior selection, restricted to the node's sampled children.

    An interior node of the sampled search has `interior_children` real children; its other
    slots carry MASKED_LOGIT and are excluded from the argmax here. (The reference notes, §3.5,
    that a masked slot's score 0 can beat visited children with negative scores; with mctx's rule
    that never decides the argmax, because the valid children's scores π′(a) − N(a)/(1 + ΣN)
    sum to 1/(1 + ΣN) > 0. The explicit mask keeps the guarantee independent of that argument
    and of the size of MASKED_LOGIT; a test checks that both rules build the same tree.)
    """
    del rng_key, depth
    visits = tree.children_visits[node_index]
    logits = tree.children_prior_logits[node_index]
    completed_q = qtransform(tree, node_index)
    probs = jax.nn.softmax(logits + completed_q)
    score = probs - visits / (1 + jnp.sum(visits))
    score = jnp.where(logits > MASKED_LOGIT / 2, score, -jnp.inf)
    return jnp.argmax(score).astype(jnp.int32)


def sampled_gumbel_search(
    params: Any,
    key: jax.Array,
    root: mctx.RootFnOutput,
    recurrent_fn: mctx.RecurrentFn,
    *,
    cfg: SearchConfig,
    num_simulations: int,
    gumbel_scale: float | jax.Array,
    interior_selection: Callable | None = None,
) -> SearchOutput:
    """Gumbel search over the K sampled root actions carried in `root.embedding.children_actions`.

    Every root candidate is considered (m = K) and the executed action is the top survivor of
    sequential halving, as in `gumbel_muzero_policy`; interior nodes use `masked_interior_selection`
    unless `interior_selection` replaces it (tests).
    """
    qtransform = completed_q_transform(cfg)
    num_candidates = root.prior_logits.shape[-1]
    key, gumbel_key = jax.random.split(key)
    gumbel = gumbel_scale * jax.random.gumbel(gumbel_key, root.prior_logits.shape, root.prior_logits.dtype)
    tree = mctx.search(
        params=params,
        rng_key=key,
        root=root,
        recurrent_fn=recurrent_fn,
        root_action_selection_fn=functools.partial(
            mctx.gumbel_muzero_root_action_selection,
            num_simulations=num_simulations,
            max_num_considered_actions=num_candidates,
            qtransform=qtransform,
        ),
        interior_action_selection_fn=interior_selection
        or functools.partial(masked_interior_selection, qtransform=qtransform),
        num_simulations=num_simulations,
        extra_data=mctx.GumbelMuZeroExtraData(root_gumbel=gumbel),
    )
    visits = tree.summary().visit_counts
    completed_q = jax.vmap(qtransform, in_axes=[0, None])(tree, tree.ROOT_INDEX)
    # The survivors of sequential halving are the candidates with the most visits; among them the
    # pick maximises g + logits + σ(q̂) (mctx's `score_considered`).
    survivor = visits == jnp.max(visits, axis=-1, keepdims=True)
    choice = jnp.argmax(jnp.where(survivor, gumbel + root.prior_logits + completed_q, -jnp.inf), axis=-1)
    candidates = root.embedding.children_actions
    return SearchOutput(
        action=jnp.take_along_axis(candidates, choice[:, None, None], axis=1)[:, 0],
        policy=jax.nn.softmax(root.prior_logits + completed_q),
        value=tree.node_values[:, tree.ROOT_INDEX],
        raw_value=tree.raw_values[:, tree.ROOT_INDEX],
        candidates=candidates,
        tree=tree,
    )


class ContinuousModelFns(ModelFns):
    """The network seen by the sampled search: K sampled candidates at the root (with prior logits
    0, the reference's uniform root prior), `interior_children` samples from each expanded node's
    own policy (no widening) in the remaining nodes."""

    def __init__(
        self, net: EZNet, net_cfg: NetworkConfig, discount: float, search_cfg: SearchConfig, path_depth: int = 0
    ):
        super().__init__(net, net_cfg, discount, path_depth)
        self.num_candidates = search_cfg.num_sampled_actions
        self.policy_candidates = search_cfg.policy_sampled_actions
        self.wide_std = search_cfg.wide_std_scale
        self.interior_children = min(search_cfg.interior_children, self.num_candidates)

    def root_candidates(self, key: jax.Array, policy_outputs: jax.Array, widen: bool) -> jax.Array:
        """[B, K, dim]: `policy_sampled_actions` from π and the rest from π with `wide_std_scale`·σ
        (acting and reanalysis), or all K from π (evaluation)."""
        if not widen:
            return gaussian.sample(key, policy_outputs, self.num_candidates)
        k1, k2 = jax.random.split(key)
        narrow = gaussian.sample(k1, policy_outputs, self.policy_candidates)
        wide = gaussian.sample(k2, policy_outputs, self.num_candidates - self.policy_candidates, self.wide_std)
        return jnp.concatenate([narrow, wide], axis=1)

    def split_root_key(self, key: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        key, root_key = jax.random.split(key)
        return key, root_key

    def root_from_outputs(self, latent, policy_outputs, value, key=None, widen: bool = True) -> mctx.RootFnOutput:
        root = super().root_from_outputs(latent, policy_outputs, value)
        candidates = self.root_candidates(key, policy_outputs, widen)
        return root.replace(
            prior_logits=jnp.zeros(candidates.shape[:2], jnp.float32),
            embedding=root.embedding.replace(children_actions=candidates),
        )

    def recurrent_fn(self, variables: Any, key: jax.Array, action: jax.Array, emb: Embedding):
        real_action = jnp.take_along_axis(emb.children_actions, action[:, None, None], axis=1)[:, 0]
        reward, outputs, value, child = self.expand(variables, real_action, emb)
        batch, dim = real_action.shape
        children = gaussian.sample(key, outputs, self.interior_children)
        pad = self.num_candidates - self.interior_children
        children = jnp.concatenate([children, jnp.zeros((batch, pad, dim), children.dtype)], axis=1)
        prior_logits = jnp.concatenate(
            [jnp.zeros((batch, self.interior_children)), jnp.full((batch, pad), MASKED_LOGIT)], axis=1
        )
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=jnp.full_like(reward, self.discount), prior_logits=prior_logits, value=value
        )
        return out, child.replace(children_actions=children)

    def search_roots(
        self, variables: Any, key: jax.Array, root: mctx.RootFnOutput, *, cfg: SearchConfig, num_simulations: int,
        max_considered_actions: int, evaluation: bool,
    ) -> SearchOutput:
        del max_considered_actions  # every sampled candidate is considered
        return sampled_gumbel_search(
            variables, key, root, self.recurrent_fn, cfg=cfg, num_simulations=num_simulations,
            gumbel_scale=0.0 if evaluation else cfg.gumbel_scale,
        )

    def policy_target_fields(self, search: SearchOutput, batch_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        return {
            "candidates": search.candidates.reshape(batch_shape + search.candidates.shape[1:]),
            "chosen": search.action.reshape(batch_shape + (-1,)),
        }
