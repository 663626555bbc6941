"""DeepMind Control from pixels (EZ-V2's `dmc_image`): rendered frames inside the compiled loop, the conv
model for continuous actions, the presets, and videos of DMC runs. (The env contract itself, for
`pixels/` ids too, is in test_envs.py.)"""

from __future__ import annotations

import os

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import TINY_FLAGS, read_rows, run_cli
from tiny import tiny_pixel_network

import ezv.envs as envs
from ezv.config import ConfigError, validate
from ezv.envs import gl
from ezv.envs.envpool_env import default_camera
from ezv.networks import EZNet
from ezv.train import resolve_config

KEY = jax.random.PRNGKey(0)
SMALL = dict(render_size=24)  # cheap frames; the protocol's 96 is checked on the spec only


def play(env, actions):
    """The observations and rewards of `env` under a fixed action sequence (one per step, all envs alike)."""
    step = jax.jit(env.step)
    state, ts = env.reset(KEY)
    obs, rewards = [np.asarray(ts.obs)], []
    for a in actions:
        state, ts = step(state, jnp.broadcast_to(a, (env.num_envs, env.spec.action_space.dim)))
        obs.append(np.asarray(ts.obs))
        rewards.append(np.asarray(ts.reward))
    return np.stack(obs), np.asarray(rewards)


def test_pixel_dmc_follows_the_dmc_image_protocol():
    spec = envs.make("pixels/CheetahRun-v1", num_envs=1, seed=0).spec
    assert spec.obs_shape == (96, 96, 3) and spec.obs_dtype == np.uint8 and spec.is_image
    assert spec.frame_stack == 4 and spec.options["action_repeat"] == 2 and spec.max_episode_steps == 500
    assert spec.domain == "dmc_pixels" and spec.action_space == envs.Box(6, (-1.0,) * 6, (1.0,) * 6)
    assert envs.domain_of("pixels/CheetahRun-v1") == "dmc_pixels"
    assert envs.has_continuous_actions("pixels/CheetahRun-v1")
    assert "pixels/WalkerWalk-v1" in envs.known_env_ids()


def test_frames_follow_the_state_and_the_same_seed_renders_the_same_frames():
    env = envs.make("pixels/CartpoleBalance-v1", num_envs=2, seed=3, **SMALL)
    push, pull = np.ones(1, np.float32), -np.ones(1, np.float32)
    obs_push, _ = play(env, [push] * 12)
    obs_again, _ = play(envs.make("pixels/CartpoleBalance-v1", num_envs=2, seed=3, **SMALL), [push] * 12)
    obs_pull, _ = play(envs.make("pixels/CartpoleBalance-v1", num_envs=2, seed=3, **SMALL), [pull] * 12)
    np.testing.assert_array_equal(obs_again, obs_push)
    np.testing.assert_array_equal(obs_pull[0], obs_push[0])  # the same start
    assert not np.array_equal(obs_pull[-1], obs_push[-1])  # the cart went the other way
    assert np.abs(obs_push[1:].astype(int) - obs_push[:-1]).mean() > 0  # the picture moves
    assert not np.array_equal(obs_push[:, 0], obs_push[:, 1])  # each env its own episode


def test_pixel_and_state_envs_of_one_seed_run_the_same_episode():
    """What lets a state run's video render through the pixel env: same seed, same actions, same rewards."""
    actions = [np.full(1, np.sin(t), np.float32) for t in range(20)]
    _, pixel_rewards = play(envs.make("pixels/CartpoleSwingup-v1", num_envs=2, seed=5, **SMALL), actions)
    _, state_rewards = play(envs.make("CartpoleSwingup-v1", num_envs=2, seed=5), actions)
    np.testing.assert_allclose(pixel_rewards, state_rewards, rtol=1e-6)
    assert pixel_rewards.std() > 0


def test_the_camera_is_ezv2s_per_domain_and_can_be_chosen():
    assert default_camera("pixels/QuadrupedRun-v1") == 2 and default_camera("pixels/WalkerWalk-v1") == 0
    assert envs.make("pixels/QuadrupedWalk-v1", num_envs=1, seed=0, **SMALL).spec.options["camera_id"] == 2
    first = {cam: play(envs.make("pixels/CartpoleBalance-v1", num_envs=1, seed=0, camera_id=cam, **SMALL), [])[0]
             for cam in (0, 1)}
    assert not np.array_equal(first[0], first[1])  # dm_control's cartpole: a fixed and a lookat camera


def test_bad_pixel_options_are_refused_before_they_can_crash_the_process():
    with pytest.raises(envs.EnvOptionError, match="render_size"):
        envs.make("pixels/CheetahRun-v1", num_envs=1, render_size=4)
    # envpool aborts the process at the first frame of a camera the task lacks: tried in a child first.
    with pytest.raises(envs.EnvOptionError, match="camera_id=9: CartpoleBalance-v1 has no such camera"):
        envs.make("pixels/CartpoleBalance-v1", num_envs=1, camera_id=9, **SMALL)
    with pytest.raises(envs.UnknownEnvError, match="pixels/CheetahRun-v1"):
        envs.make("pixels/CheetahRn-v1")


def test_a_machine_without_opengl_gets_one_error_naming_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(gl, "_probe", lambda task, camera: "ERROR: an OpenGL platform library has not been loaded")
    with pytest.raises(gl.RenderingUnavailable, match="apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri"):
        envs.make("pixels/CheetahRun-v1", num_envs=1)
    err = run_cli(["--env-id", "pixels/CheetahRun-v1", *TINY_FLAGS], capsys, code=2)
    assert err.startswith("error: DMC from pixels renders with MuJoCo") and "Traceback" not in err
    # Any other failure of the trial frame is reported as it is, without blaming OpenGL.
    monkeypatch.setattr(gl, "_probe", lambda task, camera: "ModuleNotFoundError: No module named 'ezv'")
    with pytest.raises(gl.RenderingUnavailable, match="could not render a frame.*No module named") as info:
        envs.make("pixels/CheetahRun-v1", num_envs=1)
    assert "apt-get" not in str(info.value)


# --- the model and the presets ----------------------------------------------------------------


def test_the_conv_dynamics_takes_continuous_actions_tiled_over_the_latent():
    cfg = tiny_pixel_network()
    net = EZNet(cfg, num_actions=None, action_dim=3)
    obs, action = jnp.zeros((2, 32, 32, 12), jnp.uint8), jnp.zeros((2, 3))
    variables = net.init(KEY, obs, action)
    latent = net.apply(variables, obs, method=net.represent)
    assert latent.shape == (2, 2, 2, 8)  # 32 / 16 per side, `channels` deep

    def next_latent(a):
        return net.apply(variables, latent, a, method=net.next_state)

    assert next_latent(action).shape == latent.shape
    grad = jax.grad(lambda a: jnp.sum(next_latent(a) ** 2))(jnp.ones((2, 3)) * 0.5)
    assert grad.shape == (2, 3) and np.all(np.abs(np.asarray(grad)).sum(-1) > 0)  # every action dimension counts
    policy, value = net.apply(variables, latent, method=net.predict)
    assert policy.shape == (2, 6) and value.shape == (2, cfg.value_bins)
    # EZ-V2 zero-initialises the policy output for continuous control, not the value's (reference §2.2).
    head = variables["params"]["prediction"]
    kernels = {k: np.asarray(v["Dense_1"]["kernel"] if "Dense_1" in v else v["Dense_0"]["kernel"])
               for k, v in head.items() if k.startswith("MLP")}
    assert sorted(bool(k.any()) for k in kernels.values()) == [False, True]


def test_pixel_ids_choose_the_dmc_image_preset_and_both_pixel_presets_validate():
    cfg = resolve_config(["--env-id", "pixels/WalkerWalk-v1"])
    assert cfg.preset == "dmc_image" and cfg.network.architecture == "conv" and cfg.total_env_steps == 200_000
    assert cfg.learner.discount == pytest.approx(0.99**2) and cfg.search.num_simulations == 32
    assert cfg.learner.augment and cfg.network.conv_policy_hidden == (64,) and not cfg.network.value_prefix
    spec = envs.make("pixels/WalkerWalk-v1", num_envs=1, **SMALL).spec
    validate(cfg, spec)
    small = resolve_config(["--env-id", "pixels/CartpoleBalance-v1", "--preset", "dmc_image_small"])
    assert small.env_options == {"render_size": 64} and small.network.channels == 16
    validate(small, spec)
    # --env-options adds to the preset's options (and overrides the same key).
    more = resolve_config(["--env-id", "pixels/CartpoleBalance-v1", "--preset", "dmc_image_small",
                           "--env-options", "camera_id", "1", "render_size", "48"])
    assert more.env_options == {"render_size": 48, "camera_id": 1}


def test_the_conv_architecture_on_a_state_env_is_refused_before_compiling():
    cfg = resolve_config(["--env-id", "CheetahRun-v1", "--network.architecture", "conv"])
    with pytest.raises(ConfigError, match="conv takes image observations.*pixels/<DMC id>"):
        validate(cfg, envs.make("CheetahRun-v1", num_envs=1).spec)


# --- a run, its evaluation and its video -------------------------------------------------------------

PIXEL_RUN = ["--env-id", "pixels/CartpoleBalance-v1", *TINY_FLAGS, "--offline-updates", "0",
             "--env-options", "render_size", "32", "max_episode_steps", "30",
             "--network.channels", "8", "--network.reduced-channels", "4",
             "--network.conv-head-hidden", "8", "--network.conv-policy-hidden", "8"]


def test_a_short_pixel_run_trains_end_to_end_and_its_video_shows_the_frames(tmp_path, capsys):
    from ezv.evaluate import main as evaluate

    run_dir = str(tmp_path / "pixels")
    run_cli([*PIXEL_RUN, "--run-dir", run_dir], capsys)
    rows = [r for r in read_rows(run_dir) if "loss" in r]
    assert rows and all(np.isfinite(r["loss"]) for r in rows)
    assert any("eval_return_mean" in r for r in read_rows(run_dir))
    video = str(tmp_path / "pixels.gif")
    report = evaluate([run_dir, "--episodes", "1", "--video", video])
    frames = imageio.mimread(video)
    assert len(frames) == report["video_length"] + 1 >= 2
    assert frames[0].shape == (128, 128, 3)  # 32-pixel frames, 4x
    assert len({f.tobytes() for f in frames}) > 1
    capsys.readouterr()


def test_a_state_dmc_run_records_its_video_through_the_pixel_twin(tmp_path):
    """Same seed and actions on `pixels/<id>` (see above): the video shows the state run's own episode."""
    from ezv.evaluate import record_video
    from ezv.model import EZModel
    from tiny import tiny_config

    cfg = tiny_config("control", env_id="CartpoleBalance-v1", env_options={"max_episode_steps": 20})
    spec = envs.make(cfg.env_id, 1, **cfg.env_options).spec
    variables = EZModel(cfg, spec).init_variables(KEY)
    path = str(tmp_path / "state.gif")
    length = record_video(cfg, spec, variables, path, seed=0)
    assert length == 20 and os.path.getsize(path) > 0
    frames = imageio.mimread(path)
    assert len(frames) == 21 and frames[0].shape[2] == 3 and frames[0].shape[0] >= 96


def test_pixel_runs_are_compared_with_ezv2s_pixel_scores_not_the_state_ones():
    from ezv import plot, scores

    table = scores.dmc_vision_table()
    assert len(table) == 20 and np.mean([r["efficientzero_v2_vision_approx"] for r in table.values()]) == \
        pytest.approx(726.3)  # the paper's mean over the 20 tasks is ~726
    label = "EZ-V2 from pixels (figure, approx.; 200k on its axis)"
    assert plot.reference_score("pixels/CheetahRun-v1") == (625.0, label)
    assert plot.reference_score("CheetahRun-v1")[0] != 625.0
    envpool_ids = [i for i in envs.known_env_ids() if i.startswith("pixels/")]
    assert {scores.dmc_task(i) for i in envpool_ids} >= set(table)  # every pixel task has its id (cup-catch too)
    assert plot.reference_score("pixels/BallInCupCatch-v1")[0] == table["cup-catch"]["efficientzero_v2_vision_approx"]
    assert scores.published_curve("pixels/CheetahRun-v1") == {} and scores.published_curve("CheetahRun-v1")
