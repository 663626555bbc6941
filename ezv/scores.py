"""Reference scores shipped with ezv: Atari 100k random/human scores and published agents' results
(`data/atari100k_scores.csv`), DMC proprioceptive results (`data/dmc_proprio_scores.csv`), EZ-V2's DMC
from pixels (`data/dmc_vision_scores.csv`, approximate, read off a figure), published
per-seed DMC learning curves of TD-MPC2, DreamerV3 and SAC (`data/dmc_published_curves.csv`, from
the TD-MPC2 authors; its header gives the source and commit), and the aggregates papers report
(human-normalised mean, median, interquartile mean)."""

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


# The published curves count dm_control control steps; ezv's env steps are agent steps of action repeat 2.
CONTROL_STEPS_PER_ENV_STEP = 2


@functools.cache
def published_dmc_curves() -> dict[str, dict[str, dict[int, list[float]]]]:
    """task -> algorithm -> {ezv env steps: [return of each seed]} (TD-MPC2, DreamerV3, SAC)."""
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    with open(os.path.join(DATA, "dmc_published_curves.csv")) as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            steps = int(r["step"]) // CONTROL_STEPS_PER_ENV_STEP
            by_step = out.setdefault(r["task"], {}).setdefault(r["algorithm"], {})
            by_step.setdefault(steps, []).append(float(r["return"]))
    return out


@functools.cache
def dmc_vision_table() -> dict[str, dict[str, float | None]]:
    """DMC task (e.g. "cheetah-run") -> {"x_end_env_steps", "efficientzero_v2_vision_approx"}: EZ-V2 from pixels,
    read off the repository's figure (the file's header says how)."""
    with open(os.path.join(DATA, "dmc_vision_scores.csv")) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return {r["task"]: {k: _number(v) for k, v in r.items() if k != "task"} for r in rows}


def is_pixel_id(env_id: str) -> bool:
    return env_id.startswith("pixels/")


def published_curve(env_id: str) -> dict[str, list[tuple[int, float, int]]]:
    """algorithm -> [(ezv env steps, seed-mean return, seeds)] for a state DMC env id; {} when none is published
    (the curves are from state: none for `pixels/` ids)."""
    if is_pixel_id(env_id):
        return {}
    base = env_id.split("/", 1)[-1].split("-v")[0]
    curves = {_key(t): c for t, c in published_dmc_curves().items()}
    found = curves.get(_key(base)) or curves.get(_key(base.replace("BallInCup", "Cup")), {})
    return {alg: [(s, float(np.mean(v)), len(v)) for s, v in sorted(points.items())] for alg, points in found.items()}


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
    """The DMC task of an env id (dmc/CheetahRun, CheetahRun-v1 or pixels/CheetahRun-v1 -> "cheetah-run"), or None."""
    base = env_id.split("/", 1)[-1].split("-v")[0]
    by_key = {_key(t): t for t in dmc_table()}
    return by_key.get(_key(base)) or by_key.get(_key(base.replace("BallInCup", "Cup")))  # envpool's name for cup-catch


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
