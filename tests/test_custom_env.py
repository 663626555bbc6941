"""Your own environment: registered ids and `module:factory` ids, JAX envs from two functions, gymnax and
brax-style objects, gymnasium envs on the host, the contract checker, and the errors a broken env gets
before anything compiles."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import user_envs
from cli_helpers import TINY_FLAGS, read_rows, run_cli

import ezv.envs as envs
from ezv.config import auto_preset_name
from ezv.envs.core import TimeStep, VecEnv


@pytest.fixture(autouse=True)
def forget_registrations():
    yield
    for env_id in envs.registered_ids():
        envs.unregister(env_id)


def test_a_registered_jax_env_is_batched_reset_late_and_time_limited():
    envs.register("Walk-v0", user_envs.make_walk)
    env = envs.make("Walk-v0", num_envs=3, seed=0, max_episode_steps=20)
    assert (env.spec.backend, env.spec.domain, env.spec.obs_shape, env.spec.action_space) == (
        "custom", "custom", (5,), envs.Discrete(2))
    state, ts = env.reset(jax.random.PRNGKey(0))
    rewards, firsts = [], []
    for _ in range(3):  # right, right from the middle of 5: the episode ends at the right end (+1) ...
        state, ts = env.step(state, jnp.ones(3, jnp.int32))
        rewards.append(float(ts.reward[0]))
        firsts.append(bool(ts.first[0]))
    assert rewards == [0.0, 1.0, 0.0] and firsts == [False, False, True]  # ... and the next step starts another
    report = envs.check_env("Walk-v0", steps=200)
    assert report.episodes > 0 and report.terminated > 0


def test_options_go_to_the_factory_and_max_episode_steps_is_ezvs_where_the_factory_lacks_it():
    assert envs.make("user_envs:make_walk", 1, length=9).spec.obs_shape == (9,)
    assert envs.make("user_envs:make_frames", 1, max_episode_steps=4).spec.max_episode_steps == 4
    with pytest.raises(envs.EnvOptionError, match="option.s. size not accepted by user_envs:make_walk.*length"):
        envs.make("user_envs:make_walk", 1, size=3)


def test_a_kwargs_factory_gets_its_own_options_only_and_ezv_keeps_the_time_limit():
    seen = []

    def make(**options):
        seen.append(options)
        return user_envs.make_walk(**options)

    envs.register("KwWalk-v0", make)
    env = envs.make("KwWalk-v0", 1, evaluation=True, length=7, max_episode_steps=3)
    assert seen == [{"length": 7}] and env.spec.max_episode_steps == 3 and env.spec.obs_shape == (7,)


def test_a_module_factory_id_needs_no_registration_and_a_wrong_one_says_what_is_missing():
    assert envs.backend_of("user_envs:make_push") == "custom"
    assert envs.has_continuous_actions("user_envs:make_push")
    with pytest.raises(envs.UnknownEnvError, match="module 'user_envs' has no attribute 'make_nothing'"):
        envs.make("user_envs:make_nothing", 1)
    with pytest.raises(envs.UnknownEnvError, match="cannot import module 'no_such_module'"):
        envs.make("no_such_module:make", 1)


def test_a_user_id_may_not_shadow_a_built_in_one_or_another_registration():
    with pytest.raises(ValueError, match="built-in id"):
        envs.register("CartPole-v1", user_envs.make_walk)
    envs.register("Walk-v0", user_envs.make_walk)
    with pytest.raises(ValueError, match="already registered"):
        envs.register("Walk-v0", user_envs.make_push)
    envs.register("Walk-v0", user_envs.make_push, overwrite=True)
    assert not envs.spec_of("Walk-v0").discrete


def test_the_preset_follows_the_envs_spec():
    assert auto_preset_name("user_envs:make_walk") == "classic"
    assert auto_preset_name("user_envs:make_push") == "control"
    assert auto_preset_name("user_envs:make_frames") == "atari"
    spec = envs.spec_of("user_envs:make_frames")
    assert (spec.is_image, spec.frame_stack, spec.obs_dtype) == (True, 2, np.uint8)


@pytest.mark.parametrize("factory, message", [
    ("reset_without_obs", r"reset\(key\) must return \(state, obs\); it returned int32\[\]"),
    ("step_with_five_values", r"must return \(state, obs, reward, terminated\); it returned a 5-tuple"),
    ("obs_changes_shape", r"step's obs is float32\[7\] but reset's is float32\[5\]"),
    ("string_in_state", "must return JAX arrays"),
    ("python_if_on_traced", "pure JAX .*Python `if`"),
    ("numpy_on_traced", "pure JAX .*jnp, not numpy"),
    ("batched_reward", r"reward must be a scalar \(shape \(\)\), got float32\[2\]"),
    ("state_changes_shape", r"state leaf state is float32\[2\] after reset but float32\[3\] after step"),
    ("gym_style_action_space", r"action_space must be ezv.envs.Discrete\(n\) or ezv.envs.Box"),
    ("unbounded_box", "Box bounds must be finite"),
    ("not_an_env", "returned a dict. It must return an ezv.envs.JaxEnv"),
    ("gymnasium_with_dict_obs", "FlattenObservation"),
])
def test_a_broken_env_is_named_and_explained_before_anything_compiles(factory, message):
    with pytest.raises(envs.EnvContractError, match=message):
        envs.make(f"user_envs:{factory}", 2)


def test_the_cli_reports_a_broken_env_and_exits_2(tmp_path, capsys):
    err = run_cli(["--env-id", "user_envs:batched_reward", "--run-dir", str(tmp_path / "r"), *TINY_FLAGS], capsys,
                  code=2)
    assert "reward must be a scalar" in err and not (tmp_path / "r").exists()


def test_gymnax_and_brax_style_objects_are_adapted():
    import gymnax

    envs.register("MyGymnaxCartPole", lambda: gymnax.make("CartPole-v1"))
    spec = envs.spec_of("MyGymnaxCartPole")
    assert (spec.obs_shape, spec.action_space, spec.max_episode_steps) == ((4,), envs.Discrete(2), 500)
    assert envs.check_env("MyGymnaxCartPole", steps=100).episodes > 0

    @dataclasses.dataclass(frozen=True)
    class State:  # brax's State: obs, reward, done (a float), and whatever else
        obs: jax.Array
        reward: jax.Array
        done: jax.Array

    class Slider:  # brax / Playground style: reset(rng) -> State, step(State, action) -> State
        action_size, observation_size = 2, 2

        def reset(self, rng):
            return State(jax.random.normal(rng, (2,)), jnp.float32(0), jnp.float32(0))

        def step(self, state, action):
            obs = state.obs + 0.1 * action
            return State(obs, -jnp.sum(obs**2), (jnp.abs(obs).max() > 3).astype(jnp.float32))

    jax.tree_util.register_dataclass(State, data_fields=["obs", "reward", "done"], meta_fields=[])
    envs.register("Slider-v0", Slider)
    spec = envs.spec_of("Slider-v0")
    assert (spec.action_space.dim, spec.obs_shape, spec.max_episode_steps) == (2, (2,), 1000)
    assert envs.check_env("Slider-v0", steps=50).steps == 50


def test_a_gymnasium_env_runs_on_the_host_with_the_same_contract():
    import gymnasium

    envs.register("GymCartPole", lambda: gymnasium.make("CartPole-v1"))
    assert envs.runs_on_host("GymCartPole") and not envs.runs_on_host("user_envs:make_walk")
    env = envs.make("GymCartPole", 3, seed=0)
    assert (env.pure, env.spec.backend, env.spec.max_episode_steps) == (False, "gymnasium", 500)
    report = envs.check_env(env, steps=120)
    assert report.terminated > 0  # random CartPole episodes end within 120 steps
    pendulum = envs.make("user_envs:make_push", 1)  # a pure one next to it, unaffected
    assert pendulum.pure


def test_check_env_finds_a_broken_late_reset():
    inner = envs.make("user_envs:make_walk", 2)

    def step(state, action):  # forgets to mark the step after an episode's end as `first`
        state, ts = inner.step(state, action)
        return state, ts.replace(first=jnp.zeros_like(ts.first), reward=jnp.where(ts.first, 5.0, ts.reward))

    broken = VecEnv(spec=inner.spec, num_envs=2, reset=inner.reset, step=step)
    with pytest.raises(envs.EnvContractError, match="late reset"):
        envs.check_env(broken, steps=50)
    assert isinstance(inner.reset(jax.random.PRNGKey(0))[1], TimeStep)


def test_the_cli_reads_a_user_envs_spec_with_the_options_given():
    from ezv.train import resolve_config

    cfg = resolve_config(["--env-id", "user_envs:make_sized", "--env-options", "size", "9"])
    assert cfg.preset == "classic" and cfg.env_options == {"size": 9}
    assert envs.spec_of(cfg.env_id, **cfg.env_options).obs_shape == (9,)


def test_a_user_env_trains_from_the_cli(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    run_cli(["--env-id", "user_envs:make_walk", "--run-dir", run_dir, *TINY_FLAGS], capsys)
    rows = read_rows(run_dir)
    assert rows[-1]["env_steps"] == 80 and rows[-1]["updates"] > 0 and "eval_return_mean" in rows[-1]
