"""`python -m ezv.evaluate RUN_DIR_OR_CHECKPOINT_OR_FILE [--episodes 32] [--video out.mp4] [--json out.json]`

Evaluates a trained agent with the greedy search (no Gumbel noise; continuous control: the K
candidates drawn from π) under the domain's evaluation protocol (Atari: raw rewards, no episodic
life, 27k-step cap). The source is a run directory (its newest checkpoint), one checkpoint folder
(RUN_DIR/checkpoints/<step>) or an exported agent file (`python -m ezv.export`). Prints the mean
± std return per seed and, for Atari, the human-normalised score; `--video` records the first
episode of the first seed (.mp4 or .gif; Atari and MinAtar frames, drawn classic-control tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from ezv import scores
from ezv.envs.envpool_env import default_camera
from ezv.envs.gl import RenderingUnavailable, ensure_rendering
from ezv.render import VideoError, frame_of, pixel_twin_id


def load_source(path: str) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any], list[int]]:
    """(config, env spec, variables per seed, description, seeds) of a run dir, checkpoint or agent file."""
    from ezv.export import load_checkpoint_agents
    from ezv.inference import load_agent

    if os.path.isfile(path):
        agent = load_agent(path)
        seed = agent.meta.get("seed", agent.cfg.seed)
        return agent.cfg, agent.spec, [agent.variables], {**agent.meta, "source": path}, [seed]
    cfg, spec, variables, meta, seeds = load_checkpoint_agents(path)
    return cfg, spec, variables, {**meta, "source": path}, seeds


def evaluate_variables(
    cfg: Any, variables: list[dict[str, Any]], episodes: int, seed: int, delay: int | None = None
) -> list[dict[str, np.ndarray]]:
    """One batch of `episodes` evaluation episodes per set of variables, at the run's execution delay or
    at `delay` (the run's stochastic setting; planning through it as the run did)."""
    import ezv.envs as envs
    from ezv.agent import greedy_episodes
    from ezv.model import EZModel
    from ezv.program import with_delay

    env = envs.make(cfg.env_id, episodes, seed, evaluation=True, **cfg.env_options)
    env = with_delay(cfg, env, cfg.delay if delay is None else delay)
    model = EZModel(cfg, env.spec)
    evaluate_episodes = jax.jit(lambda params, batch_stats, key: greedy_episodes(
        model, env, params, batch_stats, key, forward=cfg.forward, planned_queue=cfg.plans_queue))
    results = []
    for i, v in enumerate(variables):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        results.append(jax.device_get(evaluate_episodes(v["params"], v["batch_stats"], key)))
    return results


def summarize(env_id: str, result: dict[str, np.ndarray]) -> dict[str, Any]:
    from ezv.metrics import episode_summary

    row = episode_summary(result, dtype=float)
    game = scores.atari_game(env_id)
    if "return_mean" in row and game is not None:
        row["human_normalized"] = scores.human_normalized(game, row["return_mean"])
    return row


# --- video -----------------------------------------------------------------------------------


def check_video(spec: Any, path: str) -> None:
    if not path.endswith((".mp4", ".gif")):
        raise VideoError(f"--video {path!r}: use a .mp4 or .gif file name.")
    if pixel_twin_id(spec) is None:
        frame_of(spec, np.zeros(spec.obs_shape, spec.obs_dtype))
    else:  # the twin's own task and camera: the probe is then cached for `record_video`'s twin
        ensure_rendering(spec.env_id, default_camera(spec.env_id))


def record_video(cfg: Any, spec: Any, variables: dict[str, Any], path: str, seed: int, fps: int = 30) -> int:
    """Play one evaluation episode and write it to `path` (.mp4 or .gif); returns its length."""
    import imageio.v2 as imageio

    import ezv.envs as envs
    from ezv.agent import start_from_planned_queues
    from ezv.frames import init_frames, push_frame, stacked_obs
    from ezv.model import EZModel
    from ezv.program import with_delay

    env = with_delay(cfg, envs.make(cfg.env_id, 1, seed, evaluation=True, **cfg.env_options), cfg.delay)
    check_video(env.spec, path)
    model = EZModel(cfg, env.spec)
    forward = cfg.forward and cfg.delay > 0

    # A state DMC env is filmed through its pixel twin: the same task and seed, given the executed actions.
    twin_id = pixel_twin_id(env.spec)
    twin = None if twin_id is None else envs.make(
        twin_id, 1, seed, evaluation=True, frame_stack=1,
        **{k: v for k, v in cfg.env_options.items() if k in ("action_repeat", "max_episode_steps")})

    def picture(ts, twin_ts):
        return frame_of((twin or env).spec, np.asarray((twin_ts if twin else ts).obs[0]))

    @jax.jit
    def step(variables, env_state, twin_state, ts, frames, key):
        action = model.greedy_action(variables, stacked_obs(frames), key, delay=ts.delay if forward else None)
        env_state, ts = env.step(env_state, action)
        twin_ts = None
        if twin is not None:
            twin_state, twin_ts = twin.step(twin_state, action if ts.delay is None else ts.delay.executed)
        return env_state, twin_state, ts, twin_ts, push_frame(frames, ts)

    key = jax.random.PRNGKey(seed)
    env_state, ts = env.reset(key)
    twin_state, twin_ts = twin.reset(key) if twin is not None else (None, None)
    if cfg.plans_queue and cfg.delay > 0:
        plan_key = jax.random.split(key)[1]
        env_state, ts = jax.jit(lambda v, s, t: start_from_planned_queues(model, env, v, plan_key, s, t))(
            variables, env_state, ts)
    frames = init_frames(ts.obs, env.spec.frame_stack)
    images = [picture(ts, twin_ts)]
    for t in range(env.spec.max_episode_steps + 1):
        env_state, twin_state, ts, twin_ts, frames = step(variables, env_state, twin_state, ts, frames,
                                                          jax.random.fold_in(key, t))
        images.append(picture(ts, twin_ts))
        if bool(ts.episode_done[0]):
            break
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".gif"):
        imageio.mimsave(path, images, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, images, fps=fps, macro_block_size=1)
    return len(images) - 1


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ezv import compile_cache
    from ezv.checkpoint import CheckpointError

    compile_cache.enable()
    parser = argparse.ArgumentParser(prog="python -m ezv.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="run directory, RUN_DIR/checkpoints/<step>, or an exported .ezv file")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument("--video", default=None, help="record the first episode to this .mp4 or .gif")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--delays", type=int, nargs="+", default=None,
                        help="execution delays to evaluate at, each with the run's --stochastic-delay setting and "
                             "planning as it was trained (default: the run's own delay)")
    args = parser.parse_args(argv)
    try:
        if args.episodes < 1:
            raise ValueError("--episodes must be >= 1.")
        if args.delays is not None and any(d < 0 for d in args.delays):
            raise ValueError(f"--delays must be >= 0 agent steps (got {args.delays}).")
        cfg, spec, variables, info, seeds = load_source(args.source)
        if args.video:  # say so now rather than after the evaluation episodes
            check_video(spec, args.video)
        delays = [None] if args.delays is None else list(dict.fromkeys(args.delays))
        results = {d: evaluate_variables(cfg, variables, args.episodes, args.seed, d) for d in delays}
    except (CheckpointError, ValueError, FileNotFoundError, RenderingUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    steps = f"{info.get('env_steps', '?')} env steps, {info.get('updates', info.get('train_steps', '?'))} updates"
    print(f"{cfg.env_id}: {info['source']} ({steps}); {args.episodes} evaluation episodes per seed, greedy search")
    report = {"env_id": cfg.env_id, "source": info["source"], "env_steps": info.get("env_steps"),
              "episodes": args.episodes}
    for delay, per_seed in results.items():
        if delay is None:
            report.update(report_seeds(cfg, spec, seeds, per_seed))
        else:
            print(f" at execution delay {delay} ({'stochastic, up to' if cfg.stochastic_delay else 'constant'} {delay};"
                  f" {'planning through the pending actions' if cfg.forward else 'oblivious'}):")
            report.setdefault("delays", {})[str(delay)] = report_seeds(cfg, spec, seeds, per_seed)
    if args.video:
        try:
            length = record_video(cfg, spec, variables[0], args.video, args.seed)
        except (VideoError, RenderingUnavailable) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        report["video"], report["video_length"] = args.video, length
        print(f"video of one episode ({length} steps) in {args.video}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


def report_seeds(cfg: Any, spec: Any, seeds: list[int], results: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Print one line per seed (and their mean); -> {"seeds": {seed: summary}, "return_mean_over_seeds"?}."""
    report: dict[str, Any] = {"seeds": {}}
    for seed, result in zip(seeds, results):
        row = summarize(cfg.env_id, result)
        report["seeds"][str(seed)] = row
        if "return_mean" in row:
            line = (f"  seed {seed}: return {row['return_mean']:.1f} ± {row['return_std']:.1f} over {row['episodes']} "
                    "episodes")
            line += f", mean length {row['length_mean']:.0f}"
            if "human_normalized" in row:
                line += f", human-normalised {row['human_normalized']:.3f}"
        else:
            line = f"  seed {seed}: no episode finished within {spec.max_episode_steps} steps"
        if row["unfinished"]:
            line += f" ({row['unfinished']} episodes did not finish)"
        print(line)
    means = [r["return_mean"] for r in report["seeds"].values() if "return_mean" in r]
    if len(means) > 1:
        report["return_mean_over_seeds"] = float(np.mean(means))
        print(f"  over {len(means)} seeds: {np.mean(means):.1f} ± {np.std(means):.1f}")
    return report


if __name__ == "__main__":
    main()
