"""Pictures of observations, for evaluation videos: Atari, MinAtar and DMC-from-pixels frames as they are,
state DMC through its pixel twin (`pixel_twin_id`), and the classic-control tasks drawn from the state in
their observation."""

from __future__ import annotations

from typing import Any

import numpy as np


class VideoError(ValueError):
    """The env cannot be recorded."""


MINATAR_COLOURS = np.array([[230, 80, 60], [60, 160, 230], [250, 200, 40], [120, 220, 90], [200, 100, 220],
                            [240, 140, 40], [90, 220, 210], [240, 240, 240], [160, 160, 160], [250, 120, 160]],
                           np.float32)


def pixel_twin_id(spec: Any) -> str | None:
    """The env that films a state DMC (envpool) episode: its `pixels/` id, which with the same seed and the
    same actions runs the same episode; None for every other env."""
    return "pixels/" + spec.env_id if spec.backend == "envpool" and spec.domain == "dmc" else None


def frame_of(spec: Any, obs: np.ndarray) -> np.ndarray:
    """An RGB uint8 picture of one observation."""
    if spec.is_image:  # Atari and DMC from pixels: the agent's view
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
    raise VideoError(f"--video records image observations (Atari *-v5, *-MinAtar, pixels/<DMC id>), envpool's DMC "
                     f"tasks (*-v1) and the classic-control tasks ({', '.join(sorted(CLASSIC_DRAWERS))}); "
                     f"{spec.env_id} ({spec.backend}) has no renderer here.")


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
