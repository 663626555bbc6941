"""The best evaluation's agent of each seed, kept beside the checkpoints (which keep only the newest few).

    RUN_DIR/best/seed{S}.ezv    an agent file (`ezv.inference`): the networks of seed S when its evaluation
                                return (the mean over the run's evaluation episodes) was the highest so far
    RUN_DIR/best/best.json      per seed: that evaluation's progress, env steps, updates and return

A file is rewritten only when a seed's evaluation beats its best, so `--keep-checkpoints` never removes it.
Evaluations with episodes stopped by the periodic cap (`eval_max_episode_steps`) are not compared: they are
scored so far, the others played out. A resumed run keeps a best from up to the checkpoint it resumes from;
a best from after it (an abandoned future of the run) is moved to RUN_DIR/checkpoints-set-aside/ (the
checkpoints of that future go there too), and that seed's best starts again from its next evaluation (the
earlier bests were overwritten).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

from ezv.files import write_atomic

BEST_DIR = "best"
INDEX = "best.json"


def best_dir(run_dir: str) -> str:
    return os.path.join(run_dir, BEST_DIR)


def best_file(run_dir: str, seed: int) -> str:
    return os.path.join(best_dir(run_dir), f"seed{seed}.ezv")


def read_index(run_dir: str) -> dict[int, dict[str, Any]]:
    """{seed: {"progress", "env_steps", "updates", "eval_return_mean"}} of the bests kept (empty if none)."""
    path = os.path.join(best_dir(run_dir), INDEX)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return {int(seed): entry for seed, entry in json.load(f)["seeds"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a damaged index: the next evaluation starts the bests again (the files stay until replaced)


class BestKeeper:
    """Offers each evaluation of each seed; keeps the agent file of the best."""

    def __init__(self, run_dir: str, cfg: Any, spec: Any, resumed_at: int | None = None):
        self.run_dir, self.cfg, self.spec = run_dir, cfg, spec
        self.index = read_index(run_dir)
        if resumed_at is not None:
            self._set_aside_after(resumed_at)

    def _set_aside_after(self, progress: int) -> None:
        later = [seed for seed, entry in self.index.items() if entry.get("progress", 0) > progress]
        if not later:
            return
        aside = os.path.join(self.run_dir, "checkpoints-set-aside")
        os.makedirs(aside, exist_ok=True)
        for seed in later:
            entry = self.index.pop(seed)
            source = best_file(self.run_dir, seed)
            if os.path.exists(source):
                shutil.move(source, os.path.join(aside, f"best-seed{seed}-p{entry.get('progress')}.ezv"))
        self._write_index()

    def _write_index(self) -> None:
        os.makedirs(best_dir(self.run_dir), exist_ok=True)
        write_atomic(os.path.join(best_dir(self.run_dir), INDEX),
                     json.dumps({"seeds": {str(s): e for s, e in sorted(self.index.items())}}, indent=1))

    def offer(self, seed: int, row: dict[str, Any], progress: int, variables: Callable[[], dict[str, Any]]) -> bool:
        """Keep `variables()` as seed `seed`'s best if this evaluation (`row`, a metrics row) beats it."""
        from ezv import __version__
        from ezv.inference import write_agent

        score = row.get("eval_return_mean")
        if score is None or row.get("eval_capped"):  # episodes cut by the periodic cap are scored differently
            return False
        best = self.index.get(seed)
        if best is not None and score <= best["eval_return_mean"]:
            return False
        entry = {"progress": progress, "env_steps": int(row["env_steps"]), "updates": int(row["updates"]),
                 "eval_return_mean": float(score), "eval_episodes": int(row.get("eval_episodes", 0))}
        os.makedirs(best_dir(self.run_dir), exist_ok=True)
        meta = {"seed": seed, "env_steps": entry["env_steps"], "train_steps": entry["updates"], "best": True,
                "progress": progress,
                "eval_return_mean": entry["eval_return_mean"], "run_dir": os.path.abspath(self.run_dir),
                "ezv": __version__}
        write_agent(best_file(self.run_dir, seed), self.cfg, self.spec, variables(), meta)
        self.index[seed] = entry
        self._write_index()
        return True
