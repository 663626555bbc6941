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
import jax.numpy as jnp
import numpy as np

from ezv import scores


class VideoError(ValueError):
    """The env cannot be recorded."""


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


def evaluate(cfg: Any, variables: list[dict[str, Any]], episodes: int, seed: int) -> list[dict[str, np.ndarray]]:
    """One batch of `episodes` evaluation episodes per set of variables."""
    import ezv.envs as envs
    from ezv.agent import Agent

    env = envs.make(cfg.env_id, episodes, seed, evaluation=True, **cfg.env_options)
    agent = Agent(cfg, env, env)
    results = []
    for i, v in enumerate(variables):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        results.append(jax.device_get(agent.evaluate(v["params"], v["batch_stats"], key)))
    return results


def summarize(env_id: str, result: dict[str, np.ndarray]) -> dict[str, Any]:
    finished = np.asarray(result["finished"])
    returns = np.asarray(result["returns"], dtype=float)[finished]
    row: dict[str, Any] = {"episodes": int(finished.sum()), "unfinished": int((~finished).sum())}
    if returns.size:
        row.update(return_mean=float(returns.mean()), return_std=float(returns.std()),
                   length_mean=float(np.asarray(result["lengths"])[finished].mean()), returns=returns.tolist())
        game = scores.atari_game(env_id)
        if game is not None:
            row["human_normalized"] = scores.human_normalized(game, float(returns.mean()))
    return row


# --- video -----------------------------------------------------------------------------------

MINATAR_COLOURS = np.array([[230, 80, 60], [60, 160, 230], [250, 200, 40], [120, 220, 90], [200, 100, 220],
                            [240, 140, 40], [90, 220, 210], [240, 240, 240], [160, 160, 160], [250, 120, 160]],
                           np.float32)


def frame_of(spec: Any, obs: np.ndarray) -> np.ndarray:
    """An RGB uint8 picture of one observation."""
    if spec.is_image:  # Atari: the agent's 96x96 view
        img = obs if obs.shape[-1] == 3 else np.repeat(obs[..., :1], 3, axis=-1)
        return np.kron(img, np.ones((4, 4, 1), np.uint8))
    if spec.domain == "minatar":  # 10x10xC binary channels, one colour per channel
        channels = np.asarray(obs, np.float32)
        colours = MINATAR_COLOURS[np.arange(channels.shape[-1]) % len(MINATAR_COLOURS)]
        img = np.clip(channels @ colours, 0, 255).astype(np.uint8)
        return np.kron(img, np.ones((32, 32, 1), np.uint8))
    drawer = CLASSIC_DRAWERS.get(spec.env_id.split("-v")[0])
    if drawer is not None:  # classic control: the state is in the observation
        return drawer(np.asarray(obs, np.float64))
    raise VideoError(f"--video records image observations (Atari *-v5, *-MinAtar) and the classic-control tasks "
                     f"({', '.join(sorted(CLASSIC_DRAWERS))}); {spec.env_id} ({spec.backend}) has no renderer here.")


def _canvas(size: int = 400):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255, 255))
    return image, ImageDraw.Draw(image)


def _draw_cartpole(obs: np.ndarray) -> np.ndarray:
    x, theta = obs[0], obs[2]  # cart position (|x| < 2.4 m), pole angle from vertical
    image, draw = _canvas()
    scale, ground = 400 / 4.8, 300
    cx = 200 + x * scale
    draw.line([(0, ground), (400, ground)], fill=(0, 0, 0), width=1)
    draw.rectangle([cx - 25, ground - 15, cx + 25, ground + 15], fill=(40, 40, 40))
    tip = (cx + 100 * np.sin(theta), ground - 100 * np.cos(theta))
    draw.line([(cx, ground), tip], fill=(200, 120, 60), width=8)
    return np.asarray(image)


def _draw_pendulum(obs: np.ndarray) -> np.ndarray:
    cos, sin = obs[0], obs[1]  # angle from upright
    image, draw = _canvas()
    draw.line([(200, 200), (200 + 150 * sin, 200 - 150 * cos)], fill=(200, 60, 60), width=14)
    draw.ellipse([192, 192, 208, 208], fill=(0, 0, 0))
    return np.asarray(image)


def _draw_acrobot(obs: np.ndarray) -> np.ndarray:
    t1, t2 = np.arctan2(obs[1], obs[0]), np.arctan2(obs[3], obs[2])  # hanging down at 0
    image, draw = _canvas()
    p1 = (200 + 90 * np.sin(t1), 200 + 90 * np.cos(t1))
    p2 = (p1[0] + 90 * np.sin(t1 + t2), p1[1] + 90 * np.cos(t1 + t2))
    draw.line([(0, 110), (400, 110)], fill=(0, 0, 0), width=1)  # the goal height
    draw.line([(200, 200), p1, p2], fill=(0, 80, 200), width=10)
    return np.asarray(image)


def _draw_mountain_car(obs: np.ndarray) -> np.ndarray:
    position = obs[0]  # in [-1.2, 0.6], goal at 0.5

    def to_px(p):
        return 400 * (p + 1.2) / 1.8, 330 - 120 * np.sin(3 * p)

    image, draw = _canvas()
    draw.line([to_px(p) for p in np.linspace(-1.2, 0.6, 100)], fill=(0, 0, 0), width=2)
    draw.line([to_px(0.5), (to_px(0.5)[0], to_px(0.5)[1] - 40)], fill=(0, 150, 0), width=3)
    x, y = to_px(position)
    draw.ellipse([x - 12, y - 24, x + 12, y], fill=(200, 60, 60))
    return np.asarray(image)


CLASSIC_DRAWERS = {"CartPole": _draw_cartpole, "Pendulum": _draw_pendulum, "Acrobot": _draw_acrobot,
                   "MountainCar": _draw_mountain_car, "MountainCarContinuous": _draw_mountain_car}


def check_video(spec: Any, path: str) -> None:
    if not path.endswith((".mp4", ".gif")):
        raise VideoError(f"--video {path!r}: use a .mp4 or .gif file name.")
    frame_of(spec, np.zeros(spec.obs_shape, spec.obs_dtype))


def record_video(cfg: Any, spec: Any, variables: dict[str, Any], path: str, seed: int, fps: int = 30) -> int:
    """Play one evaluation episode and write it to `path` (.mp4 or .gif); returns its length."""
    import imageio.v2 as imageio

    import ezv.envs as envs
    from ezv.agent import Agent, _push_frame, _stack_obs

    env = envs.make(cfg.env_id, 1, seed, evaluation=True, **cfg.env_options)
    check_video(env.spec, path)
    agent = Agent(cfg, env, env)
    stack = env.spec.frame_stack

    @jax.jit
    def step(variables, env_state, ts, frames, key):
        out = agent.search(variables, key, _stack_obs(frames, stack), 0.0, evaluation=True)
        env_state, ts = env.step(env_state, agent.env_action(out.action))
        return env_state, ts, _push_frame(frames, ts)

    key = jax.random.PRNGKey(seed)
    env_state, ts = env.reset(key)
    frames = jnp.broadcast_to(ts.obs[:, None], (1, stack) + ts.obs.shape[1:])
    images = [frame_of(env.spec, np.asarray(ts.obs[0]))]
    for t in range(env.spec.max_episode_steps + 1):
        env_state, ts, frames = step(variables, env_state, ts, frames, jax.random.fold_in(key, t))
        images.append(frame_of(env.spec, np.asarray(ts.obs[0])))
        if bool(ts.episode_done[0]):
            break
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".gif"):
        imageio.mimsave(path, images, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, images, fps=fps, macro_block_size=1)
    return len(images) - 1


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ezv.checkpoint import CheckpointError

    parser = argparse.ArgumentParser(prog="python -m ezv.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="run directory, RUN_DIR/checkpoints/<step>, or an exported .ezv file")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument("--video", default=None, help="record the first episode to this .mp4 or .gif")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        if args.episodes < 1:
            raise ValueError("--episodes must be >= 1.")
        cfg, spec, variables, info, seeds = load_source(args.source)
        if args.video:  # say so now rather than after the evaluation episodes
            check_video(spec, args.video)
        results = evaluate(cfg, variables, args.episodes, args.seed)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    steps = f"{info.get('env_steps', '?')} env steps, {info.get('updates', info.get('train_steps', '?'))} updates"
    print(f"{cfg.env_id}: {info['source']} ({steps}); {args.episodes} evaluation episodes per seed, greedy search")
    report = {"env_id": cfg.env_id, "source": info["source"], "env_steps": info.get("env_steps"),
              "episodes": args.episodes, "seeds": {}}
    for seed, result in zip(seeds, results):
        row = summarize(cfg.env_id, result)
        report["seeds"][str(seed)] = row
        if "return_mean" in row:
            line = f"  seed {seed}: return {row['return_mean']:.1f} ± {row['return_std']:.1f} over {row['episodes']} episodes"
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
    if args.video:
        try:
            length = record_video(cfg, spec, variables[0], args.video, args.seed)
        except VideoError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        report["video"] = args.video
        print(f"video of one episode ({length} steps) in {args.video}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
