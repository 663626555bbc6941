"""envpool backend: Atari (`*-v5`) and DeepMind Control (`*-v1`) stepped inside jit via `env.xla()`.

Facts about envpool 1.2.5 that shape this module (each checked on this machine):
- Its XLA `recv` races with its worker threads: with more than one thread, steps return
  garbage env ids and observations, and processes crash or hang at random. With one
  worker thread per pool it is clean, so `num_threads` is fixed at 1 (the numpy API is
  not affected, but it cannot run inside jit).
- It resets one step late (dm_env style), which is exactly the contract of `core.py`.
- DMC actions and observations are float64; the XLA functions are built and traced
  inside a local `jax.enable_x64` scope and converted to float32 at the boundary, so the
  rest of the program keeps x64 off.
- The env's random state lives in C++ and is seeded once by `seed`: the key given to
  `reset` is ignored, and the env state cannot be vmapped or checkpointed.
- For DMC, envpool's `frame_skip` is dm_control's number of *physics* steps per control
  step (walker 10, hopper 4, cheetah 1, ...), not an action repeat. It keeps envpool's
  per-task default, so one envpool step is one dm_control control step, and the action
  repeat is done here: `action_repeat` control steps per agent step, rewards summed (the
  reference's dmc2gym `frame_skip`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from ezv.envs.core import Box, Discrete, EnvSpec, TimeStep, VecEnv, first_timestep, skip_resetting, step_timestep

ATARI_FAMILY = "envpool.atari"
DMC_FAMILY = "envpool.mujoco.dmc"
PIXELS_PREFIX = "pixels/"  # pixels/CheetahRun-v1: envpool's CheetahRun-v1 rendered (its `from_pixels`)
_THREAD_RACE = (
    "envpool's XLA interface (1.2.5) corrupts data with more than one worker thread; "
    "ezv runs each pool with num_threads=1. Use more envs or several runs instead."
)


TRAIN_GAME_STEPS = 100_000
EVAL_GAME_STEPS = 27_000


@dataclasses.dataclass(frozen=True)
class AtariOptions:
    """The EZ-V2 Atari protocol (reference section 6); `evaluation=True` switches the
    protocol-dependent defaults (episodic_life, reward_clip, max_episode_steps) to the
    evaluation protocol. Any value given explicitly wins."""

    evaluation: bool = False
    img_size: int = 96
    gray_scale: bool = False
    frame_skip: int = 4
    frame_stack: int = 4
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    full_action_space: bool = False
    use_fire_reset: bool = False
    episodic_life: bool | None = None  # train: True, evaluation: False
    reward_clip: bool | None = None  # train: True, evaluation: False
    # Agent steps per game. Training: 100k, gym's NoFrameskip-v4 cap (400k frames), which is what
    # bounds the reference's training games (its 3000-step TimeLimit only cuts a life's trajectory
    # and the game goes on); evaluation: 27k (108k frames).
    max_episode_steps: int | None = None
    num_threads: int = 1

    def resolved(self) -> "AtariOptions":
        ev = self.evaluation
        return dataclasses.replace(
            self,
            episodic_life=(not ev) if self.episodic_life is None else self.episodic_life,
            reward_clip=(not ev) if self.reward_clip is None else self.reward_clip,
            max_episode_steps=(
                (EVAL_GAME_STEPS if ev else TRAIN_GAME_STEPS)
                if self.max_episode_steps is None
                else self.max_episode_steps
            ),
        )


@dataclasses.dataclass(frozen=True)
class DMCOptions:
    """action_repeat: dm_control control steps per agent step (rewards summed); max_episode_steps
    in agent steps (None: dm_control's 1000 control steps / action_repeat)."""

    evaluation: bool = False
    action_repeat: int = 2
    max_episode_steps: int | None = None
    num_threads: int = 1


@dataclasses.dataclass(frozen=True)
class DMCPixelOptions(DMCOptions):
    """EZ-V2's `dmc_image` protocol: render_size x render_size RGB frames, the agent seeing the one
    rendered after the last control step of each agent step, stacked by the agent (`frame_stack`);
    camera_id None picks EZ-V2's camera, 2 for quadruped (DrQ-v2's choice) and 0 for every other domain."""

    render_size: int = 96
    camera_id: int | None = None
    frame_stack: int = 4


def default_camera(env_id: str) -> int:
    return 2 if env_id.removeprefix(PIXELS_PREFIX).startswith("Quadruped") else 0


def _registry():
    from envpool.registration import registry

    return registry


def known_ids(family: str) -> list[str]:
    return sorted(k for k, v in _registry().specs.items() if v[0] == family)


@struct.dataclass
class EnvpoolState:
    handle: jax.Array  # envpool's XLA handle; the env itself lives in C++
    running_return: jax.Array  # [N] float32 score of the game in progress (raw rewards, all lives)
    needs_reset: jax.Array  # [N] bool: the previous step ended an episode (envpool resets now)
    game_over: jax.Array  # [N] bool: ... and that end was a whole game's end


def _as_float32(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, tree)


def _make_pool(env_id: str, num_envs: int, seed: int, num_threads: int, **kwargs):
    import envpool

    if num_threads != 1:
        raise ValueError(f"option num_threads={num_threads} is not supported: {_THREAD_RACE}")
    return envpool.make(
        env_id,
        env_type="gymnasium",
        num_envs=num_envs,
        batch_size=num_envs,
        num_threads=1,
        seed=int(seed),
        **kwargs,
    )


def _vec_env(
    spec: EnvSpec, pool, num_envs: int, process_obs, action_dtype, is_atari: bool, action_repeat: int = 1
) -> VecEnv:
    """`action_repeat` envpool steps per agent step (DMC control steps; Atari repeats inside envpool)."""
    stepper = _PoolStepper(pool, num_envs, process_obs, action_dtype, is_atari, action_repeat)
    return VecEnv(spec=spec, num_envs=num_envs, reset=stepper.reset, step=stepper.step, pure=False)


class _PoolStepper:
    """An envpool pool behind ezv's env contract, through envpool's XLA interface (a handle threaded
    through the compiled program; the pool's state itself lives in C++)."""

    def __init__(self, pool, num_envs: int, process_obs, action_dtype, is_atari: bool, action_repeat: int):
        self.pool, self.n, self.process_obs = pool, num_envs, process_obs
        self.action_dtype, self.is_atari, self.action_repeat = action_dtype, is_atari, action_repeat
        # Built under x64 so that float64 specs (DMC) keep their dtype in the FFI signature.
        with jax.enable_x64(True):
            handle0, self.recv, _send, self.xla_step = pool.xla()
        self.handle0 = jnp.asarray(handle0)

    def unpack(self, raw) -> tuple:
        obs, reward, terminated, truncated, info = _as_float32(raw)
        # In sync mode envpool returns envs in id order; check it cheaply in tests, not here.
        reward = reward.astype(jnp.float32)
        if self.is_atari:
            score = info["reward"].astype(jnp.float32)  # raw, unclipped
            game_over = info["terminated"].astype(bool) | truncated
        else:
            score = reward
            game_over = terminated | truncated
        return self.process_obs(obs), reward, terminated, truncated, score, game_over, info["elapsed_step"]

    def _async_reset(self, handle):
        self.pool.async_reset()
        return handle

    def reset(self, key: jax.Array) -> tuple[EnvpoolState, TimeStep]:
        del key  # envpool's randomness is seeded once, in C++, by `seed`
        # The callback returns the handle so that recv is ordered after the reset request.
        handle0 = self.handle0
        handle = io_callback(
            self._async_reset, jax.ShapeDtypeStruct(handle0.shape, handle0.dtype), handle0, ordered=True
        )
        with jax.enable_x64(True):
            handle, raw = self.recv(handle)
            obs = self.unpack(raw)[0]
        false = jnp.zeros((self.n,), bool)
        state = EnvpoolState(
            handle=handle,
            running_return=jnp.zeros((self.n,), jnp.float32),
            needs_reset=false,
            game_over=false,
        )
        return state, first_timestep(obs)

    def envpool_step(self, handle, action):
        with jax.enable_x64(True):
            handle, raw = self.xla_step(handle, action.astype(self.action_dtype))
            return handle, self.unpack(raw)

    def repeated_step(self, handle, action):
        """`action_repeat` envpool steps, rewards summed; an env whose episode ends keeps its final
        observation and collects no more reward. The time limit is a multiple of `action_repeat`
        and dm_control's suite tasks do not terminate, so an end falls on the last repeat; if one
        came earlier, the env would already be in its next episode when the agent step ends, and
        that episode would start a few control steps late (its observations stay consistent)."""
        n, repeat = self.n, self.action_repeat
        handle, out = self.envpool_step(handle, action)
        obs, reward, terminated, truncated, score, game_over, elapsed = out
        done = terminated | truncated
        for _ in range(repeat - 1):
            handle, (obs2, reward2, term2, trunc2, score2, over2, elapsed2) = self.envpool_step(handle, action)
            live = ~done
            obs = jnp.where(live.reshape((n,) + (1,) * (obs.ndim - 1)), obs2, obs)
            reward = reward + jnp.where(live, reward2, 0.0)
            score = score + jnp.where(live, score2, 0.0)
            terminated = terminated | (live & term2)
            truncated = truncated | (live & trunc2)
            game_over = game_over | (live & over2)
            elapsed = jnp.where(live, elapsed2, elapsed)
            done = terminated | truncated
        agent_steps = (elapsed + repeat - 1) // repeat
        return handle, (obs, reward, terminated, truncated, score, game_over, agent_steps)

    def agent_step(self, handle, action, resetting):
        if self.action_repeat == 1:
            return self.envpool_step(handle, action)
        # A reset is one envpool step (it returns the first observation and ignores the action),
        # so an agent step in which every env resets is a single envpool step. Envs end together
        # (one fixed episode length), so partial resets do not happen; if one did, the resetting
        # envs would also take the remaining repeats of this step's action.
        return jax.lax.cond(
            jnp.all(resetting),
            lambda: self.envpool_step(handle, action),
            lambda: self.repeated_step(handle, action),
        )

    def step(self, state: EnvpoolState, action: jax.Array) -> tuple[EnvpoolState, TimeStep]:
        resetting = state.needs_reset
        handle, (obs, reward, terminated, truncated, score, game_over, elapsed) = self.agent_step(
            state.handle, action, resetting
        )
        reward, terminated, truncated = skip_resetting(resetting, reward, terminated, truncated)
        game_over = game_over & ~resetting
        new_game = resetting & state.game_over
        running = jnp.where(new_game, 0.0, state.running_return) + jnp.where(resetting, 0.0, score)
        ended = terminated | truncated
        timestep = step_timestep(
            obs, reward, terminated, truncated, resetting, game_over, running, elapsed.astype(jnp.int32)
        )
        new_state = EnvpoolState(handle=handle, running_return=running, needs_reset=ended, game_over=game_over)
        return new_state, timestep


def make_atari(env_id: str, num_envs: int, seed: int, options: AtariOptions) -> VecEnv:
    o = options.resolved()
    if o.frame_stack < 1 or o.frame_skip < 1:
        raise ValueError("options frame_stack and frame_skip must be >= 1.")
    pool = _make_pool(
        env_id,
        num_envs,
        seed,
        o.num_threads,
        img_height=o.img_size,
        img_width=o.img_size,
        gray_scale=o.gray_scale,
        stack_num=1,  # the agent stacks; the replay stores each frame once
        frame_skip=o.frame_skip,
        noop_max=o.noop_max,
        repeat_action_probability=o.repeat_action_probability,
        full_action_space=o.full_action_space,
        use_fire_reset=o.use_fire_reset,
        episodic_life=o.episodic_life,
        reward_clip=o.reward_clip,
        max_episode_steps=o.max_episode_steps,
    )
    channels = 1 if o.gray_scale else 3
    spec = EnvSpec(
        env_id=env_id,
        backend="envpool",
        domain="atari",
        obs_shape=(o.img_size, o.img_size, channels),
        obs_dtype=np.dtype(np.uint8),
        action_space=Discrete(int(pool.action_space.n)),
        max_episode_steps=int(o.max_episode_steps),
        frame_stack=o.frame_stack,
        options=dataclasses.asdict(o),
    )

    def process_obs(obs):  # [N, C, H, W] -> [N, H, W, C]
        return jnp.transpose(obs, (0, 2, 3, 1))

    return _vec_env(spec, pool, num_envs, process_obs, jnp.int32, is_atari=True)


def _action_box(pool) -> Box:
    act = pool.action_space
    return Box(int(np.prod(act.shape)), tuple(map(float, act.low.reshape(-1))), tuple(map(float, act.high.reshape(-1))))


def _dmc_pool(task: str, num_envs: int, seed: int, options: DMCOptions, **pixels):
    """The pool and its episode length in agent steps. envpool's frame_skip stays at its per-task default
    (physics steps per control step): one envpool step is one control step, and its limit counts those."""
    max_steps = options.max_episode_steps or 1000 // options.action_repeat
    pool = _make_pool(task, num_envs, seed, options.num_threads,
                      max_episode_steps=max_steps * options.action_repeat, **pixels)
    return pool, max_steps


def make_dmc(env_id: str, num_envs: int, seed: int, options: DMCOptions) -> VecEnv:
    if options.action_repeat < 1:
        raise ValueError(f"option action_repeat must be >= 1, got {options.action_repeat}.")
    pool, max_steps = _dmc_pool(env_id, num_envs, seed, options)
    # Observation dict -> one float32 vector, keys in sorted order, each entry flattened.
    obs_space = pool.observation_space
    keys = sorted(obs_space.spaces.keys())
    sizes = [int(np.prod(obs_space[k].shape)) for k in keys]
    spec = EnvSpec(
        env_id=env_id,
        backend="envpool",
        domain="dmc",
        obs_shape=(sum(sizes),),
        obs_dtype=np.dtype(np.float32),
        action_space=_action_box(pool),
        max_episode_steps=int(max_steps),
        options={
            **dataclasses.asdict(options),
            "obs_keys": keys,
            # dm_control's physics steps per control step, for the record (walker 10, cheetah 1).
            "physics_steps_per_control_step": int(pool.config["frame_skip"]),
        },
    )

    def process_obs(obs):
        return jnp.concatenate([obs[k].reshape(obs[k].shape[0], -1) for k in keys], axis=-1)

    return _vec_env(
        spec, pool, num_envs, process_obs, jnp.float64, is_atari=False, action_repeat=options.action_repeat
    )


def make_dmc_pixels(env_id: str, num_envs: int, seed: int, options: DMCPixelOptions) -> VecEnv:
    """`pixels/<DMC id>`: the task's frames as the observation, [size, size, 3] uint8, one per agent step.

    envpool renders after every control step, so an agent step of action repeat 2 renders twice and
    the agent sees the second frame (dmc2gym renders once; the frames the agent sees are the same)."""
    from ezv.envs.gl import ensure_rendering

    o = options
    if o.action_repeat < 1 or o.frame_stack < 1:
        raise ValueError("options action_repeat and frame_stack must be >= 1.")
    if not 8 <= o.render_size <= 512:
        raise ValueError(f"option render_size must be in 8..512 pixels, got {o.render_size}.")
    camera = default_camera(env_id) if o.camera_id is None else o.camera_id
    if camera < -1:
        raise ValueError(f"option camera_id must be -1 (MuJoCo's free camera) or a camera index, got {camera}.")
    task = env_id.removeprefix(PIXELS_PREFIX)
    ensure_rendering(task, camera)  # before envpool's reset could abort the process
    pool, max_steps = _dmc_pool(task, num_envs, seed, o, from_pixels=True, render_width=o.render_size,
                                render_height=o.render_size, render_camera_id=camera)
    spec = EnvSpec(
        env_id=env_id,
        backend="envpool",
        domain="dmc_pixels",
        obs_shape=(o.render_size, o.render_size, 3),
        obs_dtype=np.dtype(np.uint8),
        action_space=_action_box(pool),
        max_episode_steps=int(max_steps),
        frame_stack=o.frame_stack,
        options={
            **dataclasses.asdict(o),
            "camera_id": camera,
            "physics_steps_per_control_step": int(pool.config["frame_skip"]),
        },
    )

    def process_obs(obs):  # [N, 3, H, W] -> [N, H, W, 3]
        return jnp.transpose(obs, (0, 2, 3, 1))

    return _vec_env(spec, pool, num_envs, process_obs, jnp.float64, is_atari=False, action_repeat=o.action_repeat)
