"""The one tiny test configuration (`tests/tiny.yaml`), as a `Config` on top of any preset and as
`ezv.train` flags."""

from __future__ import annotations

import dataclasses
import os

import yaml

from ezv.config import Config, from_plain, load_preset

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.yaml")) as _f:
    TINY = yaml.safe_load(_f)["config"]


def tiny_config(preset: str = "classic", **overrides) -> Config:
    """The preset with `tiny.yaml` on top (read strictly), then `overrides` (top-level fields)."""
    return dataclasses.replace(from_plain(TINY, load_preset(preset), strict=True), **overrides)


def _flags(plain: dict, prefix: str = "") -> list[str]:
    flags = []
    for key, value in plain.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flags += _flags(value, f"{name}.")
        else:
            values = value if isinstance(value, list) else [value]
            flags += ["--" + name.replace("_", "-"), *(str(v) for v in values)]
    return flags


# `tiny.yaml` as `python -m ezv.train` flags (on top of the env's preset), with the progress bar off.
TINY_FLAGS = [*_flags(TINY), "--quiet"]


def tiny_pixel_network():
    """`dmc_image_small`'s conv network, 8 channels wide (compiles in seconds)."""
    return dataclasses.replace(load_preset("dmc_image_small").network, channels=8, reduced_channels=4,
                               projection_hidden=16, projection_dim=16, predictor_hidden=16)
