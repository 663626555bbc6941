"""`python -m ezv.export RUN_DIR [--checkpoint STEP] [--out DIR]`: one self-contained agent file per seed.

Each file is named `{env}-s{seed}-e{env_steps}-t{train_steps}.ezv` and holds the networks of the
run's newest (or the given) checkpoint with the config and env spec needed to rebuild them; a model
card (`.md`, `ezv.card`) beside it says how it was trained and scored and how to run it;
`ezv.load_agent(path)` loads it and `python -m ezv.evaluate FILE` evaluates it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import jax

from ezv import checkpoint as ckpt
from ezv.envs.core import spec_from_dict
from ezv.inference import export_name, write_agent


def load_checkpoint_agents(path: str) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any], list[int]]:
    """(config, env spec, variables per seed, checkpoint meta, seeds) of a run dir or checkpoint folder."""
    import yaml

    from ezv.config import load_run_config

    run_dir, step = ckpt.locate(path)
    meta = ckpt.read_meta(run_dir, step)
    cfg = load_run_config(run_dir)
    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    # Runs written before 2026-12-03 kept the spec twice: `agent_spec` in this form, `env_spec` as a raw dump.
    spec_data = saved.get("agent_spec") or saved.get("env_spec")
    if not isinstance(spec_data, dict) or "kind" not in (spec_data.get("action_space") or {}):
        raise ckpt.CheckpointError(f"{run_dir}/config.yaml has no env spec ezv can read (written by an older ezv).")
    spec = spec_from_dict(spec_data)
    model = ckpt.restore_model(run_dir, step)
    seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    if cfg.num_seeds > 1:
        variables = [jax.tree.map(lambda x, i=i: x[i], model) for i in range(cfg.num_seeds)]
    else:
        variables = [model]
    return cfg, spec, variables, {**meta, "checkpoint": step, "run_dir": os.path.abspath(run_dir)}, seeds


def export_run(path: str, out_dir: str | None = None) -> list[str]:
    """Write one agent file per seed of the run (or checkpoint folder) at `path`, each with its model card
    (`ezv.card`); returns the agent files' paths."""
    cfg, spec, variables, meta, seeds = load_checkpoint_agents(path)
    infos = [{"seed": seed, "env_steps": meta["env_steps"], "train_steps": meta["updates"],
              "checkpoint": meta["checkpoint"], "progress": meta["checkpoint"], "run_dir": meta["run_dir"],
              "offline_done": meta.get("offline_updates_done", 0)} for seed in seeds]
    return write_agents(cfg, spec, variables, infos, out_dir or meta["run_dir"])


def write_agents(cfg: Any, spec: Any, variables: list[dict[str, Any]], infos: list[dict[str, Any]],
                 out_dir: str) -> list[str]:
    """One agent file (`{env}-s{seed}-e{env_steps}-t{train_steps}.ezv`) and its model card per seed."""
    from ezv.card import write_card

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for v, info in zip(variables, infos):
        name = export_name(cfg.env_id, info["seed"], info["env_steps"], info["train_steps"])
        path = write_agent(os.path.join(out_dir, name), cfg, spec, v, info)
        write_card(path, cfg, spec, info)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ezv.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory (its newest checkpoint) or one checkpoint folder")
    parser.add_argument("--checkpoint", type=int, default=None, help="export this checkpoint step instead")
    parser.add_argument("--out", default=None, help="folder for the files (default: the run directory)")
    args = parser.parse_args(argv)
    path = args.run_dir if args.checkpoint is None else os.path.join(ckpt.checkpoint_dir(args.run_dir),
                                                                     str(args.checkpoint))
    try:
        for written in export_run(path, args.out):
            print(written)
    except (ckpt.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
