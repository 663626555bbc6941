"""`python -m ezv.train --env-id Breakout-v5 [--seed 0] [--total-env-steps 100000] [--run-dir DIR] ...`

The preset comes from the env's domain (or `--preset`); every config field is a flag on top of
it (`--help` lists them with the preset's values for the given `--env-id`). The run directory
gets `config.yaml`, `metrics.jsonl` (one line per seed per `--log-interval` env steps), TensorBoard
event files and `checkpoints/`. `--resume RUN_DIR` continues a run from its newest checkpoint;
`--num-seeds N` trains seeds seed..seed+N-1 in one compiled program; `--devices D` splits the
envs and the learner batch over D devices. Several processes (hosts) train one run when each is
started with the same command plus `--distributed` (SLURM, Open MPI, Kubernetes, TPU) or
`--coordinator-address HOST:PORT --num-processes N --process-id I`; `--devices` then counts every
process's devices (README, "Several hosts").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from typing import Sequence

from ezv.config import PRESET_NAMES, Config, ConfigError, auto_preset_name, load_preset, load_run_config
from ezv.metrics import Diverged

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PEER_FAILED = 4  # another process of a multi-process run stopped
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


# --- configuration -------------------------------------------------------------------------


def resolve_config(argv: Sequence[str]) -> Config:
    """Parse flags on top of the preset for the env (two passes: env id and preset first), or on
    top of a run directory's config with `--resume`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env-id", "--env_id", default=None)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--env-options", "--env_options", nargs="*", default=[])
    known, _ = pre.parse_known_args(argv)
    if known.resume:
        saved = load_run_config(known.resume)
        for flag, value, was in (("--env-id", known.env_id, saved.env_id), ("--preset", known.preset, saved.preset)):
            if value is not None and value != was:
                raise ConfigError(f"--resume {known.resume!r} is a {was!r} run; {flag} {value} cannot change that. "
                                  "Start a new run without --resume instead.")
        default = dataclasses.replace(saved, resume=known.resume, run_dir=known.resume)
        return _parse_flags(default, argv)
    env_id = known.env_id or Config.env_id
    preset_flag = known.preset or "auto"
    if preset_flag == "auto":
        # A user's env is built to read its spec: with the options given (a factory may need them).
        preset_flag = auto_preset_name(env_id, _option_pairs(known.env_options))
    base = load_preset(preset_flag)  # a name, or a preset file / run's config.yaml (read strictly)
    # A file's values apply to --env-id when it is given, else to the env the file was written for.
    env_id = known.env_id or (base.env_id if preset_flag not in PRESET_NAMES else env_id)
    default = dataclasses.replace(base, env_id=env_id, run_dir=None, resume=None, resume_step=None)
    cfg = _parse_flags(default, argv)
    preset = preset_flag if preset_flag in PRESET_NAMES else base.preset
    return dataclasses.replace(cfg, preset=preset)


def _option_pairs(words: list[str]) -> dict:
    """`--env-options KEY VALUE ...` as a mapping, values read as YAML scalars (9 -> int, true -> bool), as tyro
    reads them; the full parse is tyro's."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in zip(words[::2], words[1::2])}


def _parse_flags(default: Config, argv: Sequence[str]) -> Config:
    """The flags on top of `default`. `--env-options` adds to the default's env options: tyro would turn a
    non-empty default dict (`dmc_image_small`'s render_size) into fixed keys and refuse every other option."""
    import tyro

    cfg = tyro.cli(Config, default=dataclasses.replace(default, env_options={}), args=list(argv), description=__doc__)
    return dataclasses.replace(cfg, env_options={**default.env_options, **cfg.env_options})


# --- the run ----------------------------------------------------------------------------------


def train(cfg: Config) -> str:
    """Run training to the end (or continue a run with `cfg.resume`); returns the run directory."""
    from ezv.run import Run

    return Run(cfg).execute()


def main(argv: Sequence[str] | None = None) -> None:
    import ezv.envs as envs
    from ezv import compile_cache, distributed
    from ezv.checkpoint import CheckpointError
    from ezv.envs.gl import RenderingUnavailable

    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(distributed.LAUNCH_HELP + "\n")
    compile_cache.enable()
    try:
        launch, argv = distributed.parse_launch(argv)
        distributed.initialize(launch)  # before anything touches a device
        cfg = resolve_config(argv)
        train(cfg)
    except (ConfigError, CheckpointError, envs.UnknownEnvError, envs.EnvOptionError, envs.EnvContractError,
            RenderingUnavailable, FileExistsError, distributed.LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        distributed.leave(EXIT_BAD_INPUT)
    except Diverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        distributed.leave(EXIT_DIVERGED)
    except distributed.PeerFailure as e:
        traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        distributed.leave(EXIT_PEER_FAILED)
    except KeyboardInterrupt:  # Ctrl-C or SIGINT: the run said what it kept; no traceback
        distributed.leave(EXIT_INTERRUPTED)
    except Exception:
        if not distributed.is_multiprocess():
            raise
        # Anything else, on one process of several: the others must not wait for it at a collective.
        traceback.print_exc()
        distributed.leave(1)


if __name__ == "__main__":
    main()
