"""The functional vector-environment contract that the compiled training loop steps.

Every backend (envpool, MuJoCo Playground, gymnax, brax) is exposed as a `VecEnv`: a
static description (`spec`) plus two pure functions over a pytree state, batched over
`num_envs` and usable under `jax.jit` and inside `jax.lax.scan`.

Auto-reset semantics (the same for every backend)
-------------------------------------------------
The step after an episode ends starts the next episode (dm_env style):

    ts = step(state, a_t)      # terminated or truncated: ts.obs is the TRUE final obs
    ts = step(state, a_t+1)    # reset: a_t+1 is ignored, ts.first is True,
                               # ts.obs is the first obs of the next episode, reward 0

So an episode with T transitions takes T + 1 calls to `step`, the final observation of
every episode is observed (needed to bootstrap through time-limit truncations), and a
step with `first=True` is never a transition: the loop stores the final observation as
the episode's last row and never stores the bogus (final obs -> first obs) pair.
envpool resets one step late natively; the pure-JAX backends are wrapped to match.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class Discrete:
    """`n` actions, numbered 0..n-1."""

    n: int


@dataclasses.dataclass(frozen=True)
class Box:
    """A continuous action vector of size `dim`, each entry in [low, high]."""

    dim: int
    low: tuple[float, ...]
    high: tuple[float, ...]


ActionSpace = Discrete | Box


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment; the agent builds its networks and presets from it.

    `frame_stack` is how many consecutive observations the agent should stack: envs return
    single frames so that the replay stores each frame once.
    """

    env_id: str
    backend: str  # "envpool", "playground", "gymnax", "brax"
    domain: str  # "atari", "dmc", "dmc_pixels", "classic", "minatar", "bsuite", "misc", "brax"
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    action_space: ActionSpace
    max_episode_steps: int
    frame_stack: int = 1
    options: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, Discrete)

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3 and self.obs_dtype == np.uint8


@struct.dataclass
class TimeStep:
    """What one call of `reset` or `step` returns for each of the `num_envs` envs.

    obs:            [N, *obs_shape] observation to act on (the final one when the episode ended).
    reward:         [N] float32 reward of the transition (0 on a `first` step).
    terminated:     [N] bool, the transition entered a terminal state (no bootstrap).
    truncated:      [N] bool, the episode hit its time limit (bootstrap from `obs`).
    first:          [N] bool, `obs` starts a new episode; the action of this call was ignored.
    episode_done:   [N] bool, an episode finished on this step (its statistics follow).
    episode_return: [N] float32 undiscounted return of that episode (0 where not done). For
                    Atari this is the game score: raw rewards summed over all lives.
    episode_length: [N] int32 agent steps of that episode (0 where not done).
    delay:          an execution-delayed env's `ezv.envs.delay.DelayObservation` (None otherwise).
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    first: jax.Array
    episode_done: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    delay: Any = None

    @property
    def last(self) -> jax.Array:
        """The episode ended on this step: `obs` is its final observation."""
        return self.terminated | self.truncated


S = TypeVar("S")


@dataclasses.dataclass(frozen=True)
class VecEnv(Generic[S]):
    """A batch of `num_envs` environments as pure functions over a state pytree `S`.

    reset(key) -> (state, TimeStep) and step(state, action) -> (state, TimeStep).
    Actions are int32 [N] for `Discrete` spaces and float32 [N, dim] for `Box` spaces.
    """

    spec: EnvSpec
    num_envs: int
    reset: Callable[[jax.Array], tuple[S, TimeStep]]
    step: Callable[[S, jax.Array], tuple[S, TimeStep]]
    # False where part of the env state lives outside JAX (envpool): such an env cannot be
    # vmapped over seeds and its state cannot be checkpointed.
    pure: bool = True

    def random_actions(self, key: jax.Array) -> jax.Array:
        """Uniformly random valid actions for every env: [N] int32 or [N, dim] float32."""
        space = self.spec.action_space
        if isinstance(space, Discrete):
            return jax.random.randint(key, (self.num_envs,), 0, space.n, dtype=jnp.int32)
        low = jnp.asarray(space.low, jnp.float32)
        high = jnp.asarray(space.high, jnp.float32)
        return jax.random.uniform(key, (self.num_envs, space.dim), jnp.float32, low, high)


def first_timestep(obs: jax.Array) -> TimeStep:
    """The TimeStep of a fresh reset: every env starts an episode."""
    n = obs.shape[0]
    false = jnp.zeros((n,), bool)
    return TimeStep(
        obs=obs,
        reward=jnp.zeros((n,), jnp.float32),
        terminated=false,
        truncated=false,
        first=jnp.ones((n,), bool),
        episode_done=false,
        episode_return=jnp.zeros((n,), jnp.float32),
        episode_length=jnp.zeros((n,), jnp.int32),
    )


def skip_resetting(
    resetting: jax.Array, reward: jax.Array, terminated: jax.Array, truncated: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Late reset: the `resetting` envs started a new episode instead of acting (their action was
    ignored), so their step has no reward and ends nothing."""
    return jnp.where(resetting, 0.0, reward), terminated & ~resetting, truncated & ~resetting


def step_timestep(
    obs: jax.Array, reward: jax.Array, terminated: jax.Array, truncated: jax.Array, first: jax.Array,
    episode_done: jax.Array, running_return: jax.Array, elapsed: jax.Array,
) -> TimeStep:
    """A batched step's TimeStep; the episode's return and length are reported where it is done."""
    return TimeStep(
        obs=obs,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        first=first,
        episode_done=episode_done,
        episode_return=jnp.where(episode_done, running_return, 0.0),
        episode_length=jnp.where(episode_done, elapsed, 0),
    )


# --- plain form (config.yaml, agent files) ---------------------------------------------------


def spec_to_dict(spec: EnvSpec) -> dict[str, Any]:
    """The spec as JSON-able data (what an agent file and `config.yaml` keep to rebuild the network)."""
    space = spec.action_space
    action = ({"kind": "discrete", "n": space.n} if isinstance(space, Discrete)
              else {"kind": "box", "dim": space.dim, "low": list(space.low), "high": list(space.high)})
    return {"env_id": spec.env_id, "backend": spec.backend, "domain": spec.domain, "obs_shape": list(spec.obs_shape),
            "obs_dtype": np.dtype(spec.obs_dtype).name, "action_space": action,
            "max_episode_steps": spec.max_episode_steps, "frame_stack": spec.frame_stack,
            "options": json.loads(json.dumps(spec.options, default=str))}


def spec_from_dict(data: dict[str, Any]) -> EnvSpec:
    a = data["action_space"]
    space = Discrete(a["n"]) if a["kind"] == "discrete" else Box(a["dim"], tuple(a["low"]), tuple(a["high"]))
    return EnvSpec(env_id=data["env_id"], backend=data["backend"], domain=data["domain"],
                   obs_shape=tuple(data["obs_shape"]), obs_dtype=np.dtype(data["obs_dtype"]), action_space=space,
                   max_episode_steps=data["max_episode_steps"], frame_stack=data["frame_stack"],
                   options=data.get("options", {}))
