"""Completed Q-values for Gumbel search, with the two normalisation rules ezv offers.

Both complete the Q-values of unvisited children with mctx's mixed value (the raw network value
and the prior-weighted Q of the visited children, N = Σ child visits) and scale the result by
σ = (c_visit + max_b N(b)) · c_scale. They differ in how Q is mapped to [0, 1] first:

- `tree` (the reference, `ctree/cminimax.cpp`): one min–max per search tree, over every return
  that the search has backed up so far at any node, divided by max(range, 0.01) and clipped to
  [0, 1]; before the first backup Q is only clipped. Differences of less than 0.01 in value stay
  small, so near-equal actions stay near-equal in π′ and in the sequential-halving scores.
- `node` (mctx's default): min–max over this node's completed Q-values with a 1e-8 floor, so the
  best and worst child of every node always map to 1 and 0, however small their gap.

The reference keeps its min–max as running statistics updated during backup. mctx's qtransform
only sees the tree, so `tree_value_range` rebuilds the same statistics from it: simulation k added
node k, and its backup fed the returns along node k's path to the root, each a function of the
stored rewards, discounts and node k's raw value; no stored value changes afterwards. It walks
the tree (the specification, for any recurrent_fn); ezv's own model functions carry each node's
path in its embedding, and `tree_value_range_from_paths` reads the same statistics from there.
"""

from __future__ import annotations

import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import mctx

QNormalisation = Literal["tree", "node"]
# The reference's `value_minmax_delta`: the smallest range a tree's min–max divides by.
TREE_RANGE_FLOOR = 0.01


def tree_value_range(tree: mctx.Tree) -> tuple[jax.Array, jax.Array]:
    """(min, max) of every return backed up in an unbatched tree, as the reference's CMinMaxStats.

    The backup of the simulation that expanded node j starts from G = v(j) and, for each edge
    (p → c) from j up to the root, feeds s = r(p, c) + γ(p, c)·G and continues with G = s; at the
    root it also feeds γ·G (the root's own update, with reward 0). Without any backup the range
    is empty (min = +inf, max = −inf).
    """
    root = tree.ROOT_INDEX
    nodes = jnp.arange(tree.node_visits.shape[-1])
    inf = jnp.asarray(jnp.inf, tree.raw_values.dtype)

    def walk(carry):
        current, returns, active, low, high = carry
        parent = jnp.maximum(tree.parents[current], 0)  # the root's NO_PARENT is never followed
        action = jnp.maximum(tree.action_from_parent[current], 0)
        discount = tree.children_discounts[parent, action]
        sample = tree.children_rewards[parent, action] + discount * returns
        at_root = active & (parent == root)
        low = jnp.minimum(low, jnp.min(jnp.where(active, sample, inf)))
        high = jnp.maximum(high, jnp.max(jnp.where(active, sample, -inf)))
        low = jnp.minimum(low, jnp.min(jnp.where(at_root, discount * sample, inf)))
        high = jnp.maximum(high, jnp.max(jnp.where(at_root, discount * sample, -inf)))
        active = active & ~at_root
        return jnp.where(active, parent, current), jnp.where(active, sample, returns), active, low, high

    start = (nodes, tree.raw_values, (tree.node_visits > 0) & (nodes != root), inf, -inf)
    *_, low, high = jax.lax.while_loop(lambda c: jnp.any(c[2]), walk, start)
    return low, high


def at_depth(per_depth: jax.Array, depth: jax.Array) -> jax.Array:
    """[..., D+1] values by depth, [...] depths -> the value at each depth."""
    return jnp.take_along_axis(per_depth, depth[..., None], axis=-1)[..., 0]


def tree_value_range_from_paths(tree: mctx.Tree) -> tuple[jax.Array, jax.Array]:
    """`tree_value_range` without walking the tree, from the path each embedding carries
    (`search.Embedding.path_return` / `path_discount`, indexed by depth).

    With R_k and Γ_k the discounted reward from the root to node j's ancestor at depth k and the
    discount accumulated to it, and W = R_d + Γ_d·v(j) at j's own depth d, the return fed at the
    edge leaving depth k is (W − R_k)/Γ_k for k < d, and the root's own update is Γ_1·W. A few
    elementwise operations over [nodes, depth]: no loop inside the search's loops, which matters
    where each loop iteration costs a launch (GPUs).
    """
    emb = tree.embeddings
    returns, discounts, depth = emb.path_return, emb.path_discount, emb.depth  # [N, D+1], [N, D+1], [N]
    nodes = jnp.arange(depth.shape[0])
    whole = at_depth(returns, depth) + at_depth(discounts, depth) * tree.raw_values  # W per node
    samples = (whole[:, None] - returns) / discounts
    backed_up = (tree.node_visits > 0) & (nodes != tree.ROOT_INDEX)
    on_path = backed_up[:, None] & (jnp.arange(returns.shape[1])[None] < depth[:, None])
    root_update = discounts[:, 1] * whole
    inf = jnp.asarray(jnp.inf, samples.dtype)
    low = jnp.minimum(jnp.min(jnp.where(on_path, samples, inf)), jnp.min(jnp.where(backed_up, root_update, inf)))
    high = jnp.maximum(jnp.max(jnp.where(on_path, samples, -inf)), jnp.max(jnp.where(backed_up, root_update, -inf)))
    return low, high


def normalise_by_tree(tree: mctx.Tree, qvalues: jax.Array) -> jax.Array:
    """The reference's `CMinMaxStats::normalize` followed by its clip to [0, 1]."""
    carries_paths = getattr(tree.embeddings, "path_return", None) is not None
    low, high = (tree_value_range_from_paths if carries_paths else tree_value_range)(tree)
    return normalise_by_range(qvalues, low, high)


def normalise_by_range(qvalues: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """(q − min) / max(max − min, 0.01) clipped to [0, 1]; q only clipped while the range is empty
    (EfficientZero's `CMinMaxStats::normalize` and the clip after it, in V1 and V2 alike)."""
    span = high - low
    has_range = span > 0
    scaled = (qvalues - jnp.where(has_range, low, 0.0)) / jnp.where(has_range, jnp.maximum(span, TREE_RANGE_FLOOR), 1.0)
    return jnp.clip(scaled, 0.0, 1.0)


def mixed_value(raw_value: jax.Array, qvalues: jax.Array, visits: jax.Array, prior_logits: jax.Array) -> jax.Array:
    """mctx's mixed value: (v + ΣN · Σ_visited π(a) Q(a) / Σ_visited π(a)) / (1 + ΣN)."""
    probs = jnp.maximum(jax.nn.softmax(prior_logits), jnp.finfo(prior_logits.dtype).tiny)
    visited = visits > 0
    visited_mass = jnp.sum(jnp.where(visited, probs, 0.0))
    weighted_q = jnp.sum(jnp.where(visited, probs * qvalues, 0.0)) / jnp.where(visited_mass > 0, visited_mass, 1.0)
    total = jnp.sum(visits)
    return (raw_value + total * weighted_q) / (total + 1)


def tree_normalised_qvalues(
    tree: mctx.Tree, node_index: jax.Array, *, value_scale: float, maxvisit_init: float
) -> jax.Array:
    """σ(q̂) of a node's children in an unbatched tree, q̂ normalised by the tree's min–max."""
    qvalues = tree.qvalues(node_index)
    visits = tree.children_visits[node_index]
    value = mixed_value(tree.raw_values[node_index], qvalues, visits, tree.children_prior_logits[node_index])
    completed = jnp.where(visits > 0, qvalues, value)
    return (maxvisit_init + jnp.max(visits)) * value_scale * normalise_by_tree(tree, completed)


def make_qtransform(normalisation: QNormalisation, value_scale: float, maxvisit_init: float) -> Callable:
    """The mctx `qtransform` (tree, node_index) -> σ(q̂) for a normalisation rule."""
    if normalisation == "tree":
        return functools.partial(tree_normalised_qvalues, value_scale=value_scale, maxvisit_init=maxvisit_init)
    if normalisation == "node":
        return functools.partial(
            mctx.qtransform_completed_by_mix_value,
            value_scale=value_scale,
            maxvisit_init=maxvisit_init,
            rescale_values=True,
            use_mixed_value=True,
        )
    raise ValueError(f"unknown Q normalisation {normalisation!r} (tree or node).")
