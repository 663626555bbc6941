"""Reference scores shipped with ezv: Atari 100k random/human scores and published agents' results
(`data/atari100k_scores.csv`), DMC proprioceptive results (`data/dmc_proprio_scores.csv`), and the
aggregates papers report (human-normalised mean, median, interquartile mean)."""

from __future__ import annotations

import csv
import functools
import os
import re

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "data")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.cache
def atari_table() -> dict[str, dict[str, float | None]]:
    """Game name -> {"random", "human", "efficientzero_v2", ...} (None where the paper has no number)."""
    with open(os.path.join(DATA, "atari100k_scores.csv")) as f:
        rows = list(csv.DictReader(f))
    return {r["game"]: {k: _number(v) for k, v in r.items() if k != "game"} for r in rows}


@functools.cache
def dmc_table() -> dict[str, dict[str, float | None]]:
    """DMC task (e.g. "cheetah-run") -> {"budget_env_steps", "efficientzero_v2_approx", ...}."""
    with open(os.path.join(DATA, "dmc_proprio_scores.csv")) as f:
        rows = list(csv.DictReader(f))
    return {r["task"]: {k: _number(v) for k, v in r.items() if k != "task"} for r in rows}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def atari_game(env_id: str) -> str | None:
    """The Atari 100k game of an env id ("Breakout-v5" -> "Breakout"), or None if not one of the 26."""
    base = env_id.split("-v")[0]
    by_key = {_key(g): g for g in atari_table()}
    return by_key.get(_key(base))


def dmc_task(env_id: str) -> str | None:
    """The DMC task of an env id ("dmc/CheetahRun" or "CheetahRun-v1" -> "cheetah-run"), or None."""
    base = env_id.split("/", 1)[-1].split("-v")[0]
    by_key = {_key(t): t for t in dmc_table()}
    return by_key.get(_key(base))


def human_normalized(game: str, score: float) -> float:
    row = atari_table()[game]
    return (score - row["random"]) / (row["human"] - row["random"])


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al. 2021)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan")
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    middle = x[lo:hi] if hi > lo else x
    return float(middle.mean())


def aggregates(values) -> dict[str, float]:
    x = np.asarray(list(values), dtype=float)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "iqm": iqm(x)}


def reference_aggregates(agent: str = "efficientzero_v2") -> dict[str, float]:
    """Human-normalised mean/median/IQM of a published agent over the 26 games."""
    table = atari_table()
    return aggregates(human_normalized(g, row[agent]) for g, row in table.items() if row.get(agent) is not None)
