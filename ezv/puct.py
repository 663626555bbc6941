"""EfficientZero's (2021) pUCT search on `mctx.search`, with EZ-V1's selection rule exactly.

`mctx.muzero_policy` differs from EZ-V1's C++ tree in three ways that change which child is picked
(family reference B.7); `puct_action_selection` is EZ-V1's rule instead (`core/ctree/cnode.cpp`):

    score(a) = P(a) · √N / (1 + N(a)) · (c1 + ln((N + c2 + 1) / c2)) + clip(norm(Q̃(a)), 0, 1)

- N is Σ child visits (mctx: 1 + Σ), so the first simulation from a node is a random tie;
- Q̃(a) = r(s, a) + γ·V(child) for a visited child, and for an unvisited one the node's "mean Q":
  at the root the mean Q̃ of its visited children (0 if none), below it
  (the parent's mean Q + Σ Q̃ of its visited children) / (their number + 1);
- norm is one min–max per tree over the Q̃ of every expanded non-root node, divided by
  max(range, 0.01), the raw Q̃ while the range is empty (mctx: per node, 1e-8 floor);
- ties within 1e-6 of the best score are broken uniformly at random.

Recorded differences from the C++ tree: EZ-V1 rebuilds its min–max by a depth-first walk that takes
the previously popped node's value prefix as the parent's (for a node that is not the last popped
node's child this mis-reads its reward); here every edge uses its own reward, as the walk intends.
The mean-Q recursion runs over the whole tree at once (pointer jumping), so its float sums associate
differently from the traversal's. The root's reported value is mctx's (v(s0) counted once), not EZ-V1's
Σ G / (N + 1); EZ-V1 uses it only behind flags that are off by default.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import mctx

from ezv.qtransforms import normalise_by_range

# EZ-V1 breaks ties among children whose scores are within this of the best.
TIE_TOLERANCE = 1e-6


def edge_qvalues(tree: mctx.Tree) -> jax.Array:
    """[N, A] Q̃ = r + γ·V(child) of every edge of an unbatched tree (garbage where the child is unvisited)."""
    return tree.children_rewards + tree.children_discounts * tree.children_values


def tree_q_range(tree: mctx.Tree, q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min, max) of Q̃ over every visited edge (= every expanded non-root node); (+inf, -inf) if none."""
    visited = tree.children_visits > 0
    inf = jnp.asarray(jnp.inf, q.dtype)
    return jnp.min(jnp.where(visited, q, inf)), jnp.max(jnp.where(visited, q, -inf))


def mean_qvalues(tree: mctx.Tree, q: jax.Array) -> jax.Array:
    """[N] every node's "mean Q" (the value an unvisited child of it is scored with).

    m(root) = mean of its visited children's Q̃ (0 if none); m(x) = (m(parent) + S(x)) / (k(x) + 1) with
    S, k the sum and count of x's visited children's Q̃. Each m(x) is an affine function of its parent's,
    composed along the path to the root by pointer jumping: ⌈log2 N⌉ + 1 rounds of gathers, no loop
    whose trip count depends on the tree (each such iteration costs a host sync on a GPU).
    """
    visited = tree.children_visits > 0
    count = jnp.sum(visited, axis=-1).astype(q.dtype)
    total = jnp.sum(jnp.where(visited, q, 0.0), axis=-1)
    nodes = jnp.arange(count.shape[0])
    is_root = nodes == tree.ROOT_INDEX
    root_mean = jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)
    # m(x) = scale(x)·m(pointer(x)) + offset(x); the root is the fixed point with scale 0.
    scale = jnp.where(is_root, 0.0, 1.0 / (count + 1.0))
    offset = jnp.where(is_root, root_mean, total / (count + 1.0))
    pointer = jnp.where(is_root | (tree.parents < 0), tree.ROOT_INDEX, tree.parents)
    for _ in range(math.ceil(math.log2(max(count.shape[0], 2))) + 1):
        offset = scale * offset[pointer] + offset
        scale = scale * scale[pointer]
        pointer = pointer[pointer]
    return offset


def puct_action_selection(
    rng_key: jax.Array, tree: mctx.Tree, node_index: jax.Array, depth: jax.Array | None = None, *,
    pb_c_init: float, pb_c_base: float,
) -> jax.Array:
    """EZ-V1's pUCT choice at `node_index` of an unbatched tree (root and interior nodes alike; mctx
    calls the root's selection without `depth`)."""
    del depth
    q = edge_qvalues(tree)
    low, high = tree_q_range(tree, q)
    visits = tree.children_visits[node_index]
    total = jnp.sum(visits).astype(q.dtype)
    pb_c = jnp.log((total + pb_c_base + 1.0) / pb_c_base) + pb_c_init
    prior = jax.nn.softmax(tree.children_prior_logits[node_index])
    prior_score = pb_c * jnp.sqrt(total) / (visits + 1.0) * prior
    value = jnp.where(visits > 0, q[node_index], mean_qvalues(tree, q)[node_index])
    score = prior_score + normalise_by_range(value, low, high)
    ties = score >= jnp.max(score) - TIE_TOLERANCE
    return jnp.argmax(jnp.where(ties, jax.random.uniform(rng_key, score.shape), -1.0)).astype(jnp.int32)


def noisy_root_logits(key: jax.Array, logits: jax.Array, alpha: float, fraction: float | jax.Array) -> jax.Array:
    """[B, A] log(P') with P' = (1 − fraction)·softmax(logits) + fraction·η, η ~ Dirichlet(alpha) per root."""
    noise = jax.random.dirichlet(key, jnp.full(logits.shape[-1:], alpha, jnp.float32), logits.shape[:-1])
    probs = (1.0 - fraction) * jax.nn.softmax(logits) + fraction * noise
    return jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny))


def puct_search(
    params: Any, key: jax.Array, root: mctx.RootFnOutput, recurrent_fn: mctx.RecurrentFn, *,
    num_simulations: int, pb_c_init: float, pb_c_base: float, dirichlet_alpha: float, dirichlet_fraction: float,
):
    """One batched pUCT search. Returns (visit counts [B, A], the tree); `dirichlet_fraction` 0 is evaluation."""
    noise_key, key = jax.random.split(key)
    if dirichlet_fraction:
        root = root.replace(prior_logits=noisy_root_logits(noise_key, root.prior_logits, dirichlet_alpha,
                                                           dirichlet_fraction))
    select = functools.partial(puct_action_selection, pb_c_init=pb_c_init, pb_c_base=pb_c_base)
    tree = mctx.search(
        params=params, rng_key=key, root=root, recurrent_fn=recurrent_fn, root_action_selection_fn=select,
        interior_action_selection_fn=select, num_simulations=num_simulations,
    )
    return tree.children_visits[:, tree.ROOT_INDEX], tree
