"""Gumbel MuZero search on mctx (reference §3) and the EZ-V2 model functions it calls.

Discrete actions use `mctx.gumbel_muzero_policy` with completed Q-values by mixed value
(c_visit 50, c_scale 0.1). Known differences from the reference's C++ tree (§3.5), kept
as mctx does them: min-max normalisation of Q is per node rather than per tree (with
mctx's epsilon instead of a 0.01 floor), and the mixed value uses the raw network value
with N = Σ child visits.

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

from ezv.config import NetworkConfig, SearchConfig
from ezv.networks import EZNet, initial_lstm_carry, reset_lstm_carry


@struct.dataclass
class SearchOutput:
    action: jax.Array  # [B] int32, the action to execute (the top survivor of sequential halving)
    policy: jax.Array  # [B, A] improved policy π′ = softmax(logits + σ(completed Q)), the policy target
    value: jax.Array  # [B] root value after search: mean of v(s0) and the simulation returns (SVE)
    raw_value: jax.Array  # [B] the network's value v(s0)


@struct.dataclass
class Embedding:
    latent: jax.Array
    lstm_carry: Any
    value_prefix: jax.Array  # [B] value prefix predicted for this node (0 at the root)
    depth: jax.Array  # [B] int32, 0 at the root


def completed_q_transform(cfg: SearchConfig) -> Callable:
    return functools.partial(
        mctx.qtransform_completed_by_mix_value,
        value_scale=cfg.value_scale,
        maxvisit_init=cfg.maxvisit_init,
        rescale_values=True,
        use_mixed_value=True,
    )


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


class ModelFns:
    """The EZ-V2 network seen by the search: root inference and `recurrent_fn`, in eval mode."""

    def __init__(self, net: EZNet, net_cfg: NetworkConfig, discount: float):
        self.net = net
        self.cfg = net_cfg
        self.discount = discount
        self.value_support = net_cfg.value_support
        self.reward_support = net_cfg.reward_support

    def root(self, variables: Any, obs: jax.Array) -> mctx.RootFnOutput:
        latent = self.net.apply(variables, obs, method=EZNet.represent)
        logits, value_logits = self.net.apply(variables, latent, method=EZNet.predict)
        return self.root_from_outputs(latent, logits, self.value_support.decode(value_logits))

    def root_from_outputs(self, latent: jax.Array, logits: jax.Array, value: jax.Array) -> mctx.RootFnOutput:
        """Search roots from already computed representation and prediction outputs."""
        batch = latent.shape[0]
        embedding = Embedding(
            latent=latent,
            lstm_carry=initial_lstm_carry(self.cfg, batch),
            value_prefix=jnp.zeros((batch,), jnp.float32),
            depth=jnp.zeros((batch,), jnp.int32),
        )
        return mctx.RootFnOutput(prior_logits=logits, value=value, embedding=embedding)

    def recurrent_fn(self, variables: Any, key: jax.Array, action: jax.Array, emb: Embedding):
        del key
        if self.cfg.value_prefix:
            reset = emb.depth % self.cfg.lstm_horizon == 0
            carry = reset_lstm_carry(emb.lstm_carry, reset)
            parent_prefix = jnp.where(reset, 0.0, emb.value_prefix)
        else:
            carry, parent_prefix = emb.lstm_carry, jnp.zeros_like(emb.value_prefix)
        latent, carry, reward_logits = self.net.apply(
            variables, emb.latent, action, carry, method=EZNet.dynamics
        )
        predicted = self.reward_support.decode(reward_logits)
        logits, value_logits = self.net.apply(variables, latent, method=EZNet.predict)
        out = mctx.RecurrentFnOutput(
            reward=predicted - parent_prefix,
            discount=jnp.full_like(predicted, self.discount),
            prior_logits=logits,
            value=self.value_support.decode(value_logits),
        )
        return out, Embedding(latent=latent, lstm_carry=carry, value_prefix=predicted, depth=emb.depth + 1)
