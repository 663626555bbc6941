"""Users' environments for the tests of `ezv.envs.custom` (importable as `user_envs:<factory>` ids)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ezv.envs import Box, Discrete, JaxEnv


def make_walk(length: int = 5, max_episode_steps: int = 20) -> JaxEnv:
    """A walk on a line from the middle: action 1 right, 0 left; an end terminates (+1 on the right, -1 left)."""

    def reset(key):
        del key
        pos = jnp.int32(length // 2)
        return pos, jax.nn.one_hot(pos, length)

    def step(pos, action):
        pos = pos + 2 * action - 1
        right, left = pos >= length - 1, pos <= 0
        return pos, jax.nn.one_hot(pos, length), jnp.where(right, 1.0, jnp.where(left, -1.0, 0.0)), right | left

    return JaxEnv(reset, step, Discrete(2), max_episode_steps=max_episode_steps)


def make_push(max_episode_steps: int = 30) -> JaxEnv:
    """A continuous 1-D point pushed towards 0; never terminates (a time limit only)."""

    def reset(key):
        x = jax.random.uniform(key, (1,), minval=-1.0, maxval=1.0)
        return {"x": x, "key": key}, x

    def step(state, action):
        x = jnp.clip(state["x"] + 0.1 * action, -2.0, 2.0)
        return {"x": x, "key": state["key"]}, x, -jnp.abs(x[0]), jnp.bool_(False)

    return JaxEnv(reset, step, Box(1, (-1.0,), (1.0,)), max_episode_steps=max_episode_steps)


def make_frames() -> JaxEnv:
    """8x8 uint8 frames, 3 actions: an image env."""

    def reset(key):
        del key
        return jnp.int32(0), jnp.zeros((8, 8, 1), jnp.uint8)

    def step(t, action):
        frame = jnp.full((8, 8, 1), 10 * action, jnp.uint8)
        return t + 1, frame, jnp.float32(action == 1), t >= 5

    return JaxEnv(reset, step, Discrete(3), max_episode_steps=10, frame_stack=2)


# --- broken ones ------------------------------------------------------------------------------


def _walk_with(reset=None, step=None, space=None) -> JaxEnv:
    good = make_walk()
    return JaxEnv(reset or good.reset, step or good.step, space or good.action_space, max_episode_steps=20)


def reset_without_obs():
    return _walk_with(reset=lambda key: jnp.int32(0))


def step_with_five_values():
    return _walk_with(step=lambda s, a: (s, jax.nn.one_hot(s, 5), 0.0, False, False))


def obs_changes_shape():
    return _walk_with(step=lambda s, a: (s, jnp.zeros(7), 0.0, False))


def string_in_state():
    return _walk_with(reset=lambda key: ({"pos": jnp.int32(2), "name": "walk"}, jnp.zeros(5)),
                      step=lambda s, a: (s, jnp.zeros(5), 0.0, False))


def python_if_on_traced():
    def step(pos, action):
        if action == 1:  # a Python branch on a traced value
            pos = pos + 1
        return pos, jax.nn.one_hot(pos, 5), 0.0, False

    return _walk_with(step=step)


def numpy_on_traced():
    return _walk_with(step=lambda s, a: (s, np.eye(5)[s], 0.0, False))


def batched_reward():
    return _walk_with(step=lambda s, a: (s, jax.nn.one_hot(s, 5), jnp.zeros(2), False))


def state_changes_shape():
    return _walk_with(reset=lambda key: (jnp.zeros(2), jnp.zeros(5)),
                      step=lambda s, a: (jnp.zeros(3), jnp.zeros(5), 0.0, False))


def gym_style_action_space():
    return _walk_with(space=2)


def unbounded_box():
    return JaxEnv(make_push().reset, make_push().step, Box(1, (-np.inf,), (np.inf,)), max_episode_steps=10)


def not_an_env():
    return {"reset": None}


def gymnasium_with_dict_obs():
    import gymnasium
    from gymnasium import spaces

    class DictEnv(gymnasium.Env):
        observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,))})
        action_space = spaces.Discrete(2)

    return DictEnv()


def make_sized(size: int) -> JaxEnv:
    """A factory with a required option (`--env-options size N`)."""
    return make_walk(length=size)
