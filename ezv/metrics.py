"""Host-side metrics: numpy reductions of what the compiled program returns (one seed at a time)."""

from __future__ import annotations

from typing import Any

import numpy as np

LOSS_TERMS = ("loss", "value_loss", "policy_loss", "reward_loss", "consistency_loss", "policy_entropy", "grad_norm")


def summarize_chunk(metrics: dict[str, Any]) -> dict[str, float]:
    """Host-side reduction of one chunk's stacked per-iteration metrics (one seed)."""
    m = {k: np.asarray(v) for k, v in metrics.items()}
    episodes = float(m["episodes"].sum())
    out = {
        "train_episodes": episodes,
        "train_return_mean": float(m["episode_return_sum"].sum() / episodes) if episodes else None,
        "train_length_mean": float(m["episode_length_sum"].sum() / episodes) if episodes else None,
        "search_value": float(m["search_value"].mean()),
    }
    if "delay" in m:  # a delayed env: the mean execution delay of the chunk's decisions
        out["delay_mean"] = float(m["delay"].mean())
    learning = m["learning"] > 0
    if learning.any():
        for name in (*LOSS_TERMS, "td_fraction", "target_value", "importance_weight"):
            if name in m:
                out[name] = float(m[name][learning].mean())
    return out


def first_nonfinite(metrics: dict[str, Any]) -> tuple[int, str] | None:
    """(how many updates of this block came before the first non-finite loss term, that term)
    or None. `metrics` are one seed's learner metrics with a `learning` mask of the same shape."""
    learning = np.asarray(metrics["learning"]).reshape(-1) > 0
    bad = np.zeros_like(learning)
    names = [n for n in LOSS_TERMS if n in metrics]
    for name in names:
        bad |= ~np.isfinite(np.asarray(metrics[name]).reshape(-1)) & learning
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    term = next(n for n in names if not np.isfinite(np.asarray(metrics[n]).reshape(-1)[first]))
    return int(learning[:first].sum()), term


class Diverged(RuntimeError):
    """A loss term became non-finite; the message says where."""


def check_finite(per_seed: list[dict[str, Any]], seeds: list[int], updates_before: int, where: str,
                 learning_mask: bool) -> None:
    """Raise `Diverged` naming the seed, the update and the term at the first non-finite loss term.
    `learning_mask`: the metrics carry the per-iteration `learning` flag (collection); without it
    every entry is an update (the offline phase)."""
    for seed, m in zip(seeds, per_seed):
        if not learning_mask:
            m = {**m, "learning": np.ones_like(np.asarray(m["loss"]))}
        found = first_nonfinite(m)
        if found is not None:
            count, term = found
            raise Diverged(f"{term} became non-finite at update {updates_before + count + 1} {where} (seed {seed}).")


def episode_summary(result: dict[str, Any], dtype: Any = None) -> dict[str, Any]:
    """One seed's evaluation ({"returns", "lengths", "finished"[, "capped"]} per episode) over its
    scored episodes: the finished ones and those stopped by an evaluation cap (`capped`, scored so
    far, as the references' periodic tests score them). Gives episodes, unfinished, capped, and when
    any was scored return_mean, return_std, length_mean, returns. `dtype`: of the reductions (None:
    the returns' own, float32 from the device, as metrics.jsonl has always logged them)."""
    finished = np.asarray(result["finished"])
    capped = np.asarray(result.get("capped", np.zeros_like(finished)))
    scored = finished | capped
    returns = np.asarray(result["returns"], dtype=dtype)[scored]
    summary: dict[str, Any] = {"episodes": int(scored.sum()), "unfinished": int((~scored).sum()),
                               "capped": int(capped.sum())}
    if returns.size:
        summary.update(return_mean=float(returns.mean()), return_std=float(returns.std()),
                       length_mean=float(np.asarray(result["lengths"])[scored].mean()), returns=returns.tolist())
    return summary


def eval_row(result: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The metrics.jsonl fields of one seed's evaluation during training (`eval_capped`: how many of
    its episodes the periodic cap stopped, when any did); `prefix` names the evaluation (an evaluation
    at execution delay D: `eval_delay{D}_`)."""
    summary = episode_summary(result)
    if "return_mean" not in summary:
        return {f"{prefix}episodes": 0}
    row = {
        f"{prefix}return_mean": summary["return_mean"],
        f"{prefix}return_std": summary["return_std"],
        f"{prefix}episodes": summary["episodes"],
        f"{prefix}length_mean": summary["length_mean"],
    }
    if summary["capped"]:
        row[f"{prefix}capped"] = summary["capped"]
    return row


def mean_present(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
