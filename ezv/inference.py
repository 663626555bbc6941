"""Trained agents outside the training loop: one self-contained file per seed, and search for inference.

    path = ezv.export.export_run("runs/pong-s0")[0]     # or: python -m ezv.export RUN_DIR
    agent = ezv.load_agent(path)
    actions = agent.act(obs, jax.random.PRNGKey(0))     # obs: [N, *agent.obs_shape] or one observation

The file (`{env}-s{seed}-e{env_steps}-t{train_steps}.ezv`) is msgpack (flax.serialization) holding
the network parameters and normalisation statistics, the run's config and the env spec: everything
needed to rebuild the network and its search, and nothing from the run directory.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ezv.envs.core import EnvSpec, spec_from_dict, spec_to_dict
from ezv.envs.delay import DelayObservation
from ezv.logger import file_safe

FORMAT = "ezv-agent"
FORMAT_VERSION = 1
SUFFIX = ".ezv"


def export_name(env_id: str, seed: int, env_steps: int, train_steps: int) -> str:
    return f"{file_safe(env_id)}-s{seed}-e{env_steps}-t{train_steps}{SUFFIX}"


def write_agent(path: str, cfg: Any, spec: EnvSpec, variables: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write one agent file atomically."""
    from flax import serialization

    from ezv.config import to_plain

    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(to_plain(cfg)),
        "spec": json.dumps(spec_to_dict(spec)),
        "meta": json.dumps(meta),
        "params": jax.tree.map(np.asarray, variables["params"]),
        "batch_stats": jax.tree.map(np.asarray, variables.get("batch_stats", {})),
    }
    data = serialization.msgpack_serialize(payload)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def read_agent_file(path: str) -> dict[str, Any]:
    from flax import serialization

    try:
        with open(path, "rb") as f:
            payload = serialization.msgpack_restore(f.read())
    except OSError as e:
        raise ValueError(f"cannot read agent file {path!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for damaged data
        raise ValueError(f"{path!r} is not a readable ezv agent file ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an ezv agent file (written by `python -m ezv.export`).")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path!r} was written by a newer ezv (format {payload['version']}); upgrade ezv to load it.")
    return payload


class LoadedAgent:
    """A trained network and its search, for inference: `act(obs, key)` runs the evaluation search
    (no Gumbel noise; continuous actions: K samples from π) and returns actions as the env takes them;
    `act(obs, key, pending=...)` plans through an execution delay's pending actions first."""

    def __init__(self, cfg: Any, spec: EnvSpec, variables: dict[str, Any], meta: dict[str, Any] | None = None):
        from ezv.model import EZModel

        self.cfg, self.spec, self.meta = cfg, spec, meta or {}
        self.variables = jax.tree.map(jnp.asarray, {"params": variables["params"],
                                                    "batch_stats": variables.get("batch_stats", {})})
        self.model = EZModel(cfg, spec)
        self._act = jax.jit(self.model.greedy_action)

    @property
    def env_id(self) -> str:
        return self.spec.env_id

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """What `act` takes per env: the observation, with `frame_stack` frames stacked on the last
        axis (oldest first) for image envs."""
        return self.model.stacked_obs_shape

    def act(self, obs: Any, key: jax.Array, *, pending: Any = None, delay: Any = None) -> jax.Array:
        """The evaluation search's actions for `obs` ([N, *obs_shape] or one observation).

        Under an execution delay, `pending` holds the actions that will execute before this decision does, as the
        env takes them, the next to execute first ([k, *action] for one observation, [N, k, *action] for N), and
        the search starts from the latent the model predicts after them, as a delayed run plans and evaluates
        (README "Execution delays"). `delay` ([N] ints <= k, default k): how many of each env's first pending
        actions apply, so that envs under different delays share one call (the rest of a row is padding). The
        pending actions are padded to the run's --delay (or k if longer), so a deployment compiles once."""
        obs = jnp.asarray(obs)
        single = obs.shape == self.obs_shape
        if single:
            obs = obs[None]
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(f"observations of shape {tuple(obs.shape)}; this agent takes {self.obs_shape} per env "
                             f"(or [N, *{self.obs_shape}]).")
        view = None if pending is None else self._delay_view(pending, delay, obs.shape[0], single)
        actions = self._act(self.variables, obs.astype(self.spec.obs_dtype), key, view)
        return actions[0] if single else actions

    def _delay_view(self, pending: Any, delay: Any, num_envs: int, single: bool) -> DelayObservation:
        """The delayed env's view (`ezv.envs.delay`) that these pending actions and delays make."""
        if not self.cfg.forward:
            raise ValueError("this agent was trained oblivious to its delay (--no-forward): its model learned the "
                             "effect of its own decisions, not of the executed actions, so it cannot plan through "
                             "pending actions; call act(obs, key) as its run evaluated it.")
        space, discrete = self.spec.action_space, self.spec.discrete
        action_shape = () if discrete else (space.dim,)
        pending = np.asarray(pending)
        if single:
            pending, delay = pending[None], None if delay is None else np.asarray(delay).reshape(1)
        if pending.ndim != 2 + len(action_shape) or pending.shape[0] != num_envs or pending.shape[2:] != action_shape:
            expected = f"[{'' if single else 'N, '}k{''.join(f', {d}' for d in action_shape)}]"
            raise ValueError(f"pending actions of shape {tuple(pending.shape[1:] if single else pending.shape)}; "
                             f"expected {expected}, the next to execute first.")
        if discrete:
            if pending.size and not (np.issubdtype(pending.dtype, np.integer)
                                     and ((pending >= 0) & (pending < space.n)).all()):
                raise ValueError(f"pending actions must be integers in 0..{space.n - 1} ({self.env_id}).")
            pending = pending.astype(np.int32)
        else:
            if not np.isfinite(pending).all():
                raise ValueError("pending actions must be finite.")
            # The env clips what it executes to its bounds; the model learned the clipped actions.
            pending = np.clip(pending, space.low, space.high).astype(np.float32)
        k = pending.shape[1]
        delay = np.full((num_envs,), k) if delay is None else np.asarray(delay)
        integers = np.issubdtype(delay.dtype, np.integer)
        if delay.shape != (num_envs,) or not integers or ((delay < 0) | (delay > k)).any():
            raise ValueError(f"delay must be [N] integers in 0..k = {k} (how many of each env's pending actions "
                             f"apply); got {delay.tolist()}.")
        padded = max(self.cfg.delay, k)
        pending = np.concatenate([pending, np.zeros((num_envs, padded - k, *action_shape), pending.dtype)], axis=1)
        return DelayObservation(delay=jnp.asarray(delay, jnp.int32), pending=jnp.asarray(pending),
                                executed=jnp.zeros((num_envs, *action_shape), pending.dtype))


def load_agent(path: str) -> LoadedAgent:
    """The agent in an exported file (`python -m ezv.export`)."""
    from ezv.config import config_from_plain

    payload = read_agent_file(path)
    cfg = config_from_plain(json.loads(payload["config"]))
    spec = spec_from_dict(json.loads(payload["spec"]))
    return LoadedAgent(cfg, spec, {"params": payload["params"], "batch_stats": payload["batch_stats"]},
                       json.loads(payload["meta"]))
