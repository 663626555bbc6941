"""The state of one seed's run: everything that changes, in one typed pytree threaded by `.replace`."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

from ezv import replay as replay_lib
from ezv.envs.core import TimeStep


@struct.dataclass
class TrainState:
    params: Any
    batch_stats: Any  # BatchNorm running averages and the observation RunningNorm
    target_params: Any
    target_batch_stats: Any
    opt_state: Any
    replay: replay_lib.Replay
    env_state: Any
    timestep: TimeStep  # the current observation and its episode flags
    frames: jax.Array  # [E, S, *obs_shape] the last S observations (oldest first)
    key: jax.Array
    iteration: jax.Array  # int32, acting steps taken (env steps = iteration * num_envs)
    updates: jax.Array  # int32, learner updates applied

    @property
    def variables(self) -> dict[str, Any]:
        """The online network's {"params", "batch_stats"} (acting, evaluation)."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def target_variables(self) -> dict[str, Any]:
        """The target network's variables (reanalysis)."""
        return {"params": self.target_params, "batch_stats": self.target_batch_stats}
