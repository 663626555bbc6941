"""`python -m ezv.train`: flags on top of presets, the run directory, and bad input."""

import dataclasses
import json
import os

import pytest
import yaml

from cli_helpers import TINY_FLAGS, run_cli

from ezv.train import main, resolve_config


def test_the_preset_follows_the_env_domain_and_flags_override_it():
    cfg = resolve_config(["--env-id", "Breakout-v5"])
    assert cfg.preset == "atari" and cfg.network.architecture == "conv" and cfg.learner.optimizer == "sgd"
    assert cfg.total_env_steps == 100_000 and cfg.offline_updates == 20_000 and cfg.network.value_bins == 601
    cfg = resolve_config(["--env-id", "CartPole-v1", "--seed", "3", "--learner.batch-size", "64"])
    assert cfg.preset == "classic" and cfg.seed == 3 and cfg.learner.batch_size == 64
    assert resolve_config(["--env-id", "Breakout-MinAtar"]).preset == "minatar"


@pytest.mark.parametrize("env_id", ["dmc/CheetahRun", "CheetahRun-v1"])
def test_dmc_ids_of_both_backends_get_the_dmc_state_preset(env_id):
    cfg = resolve_config(["--env-id", env_id])
    assert cfg.preset == "dmc_state" and cfg.network.architecture == "mlp" and cfg.network.latent_dim == 128
    assert cfg.learner.optimizer == "adam" and cfg.learner.learning_rate == 3e-4 and cfg.learner.entropy_coef == 5e-2
    assert cfg.search.num_simulations == 32 and cfg.search.num_sampled_actions == 16 and cfg.search.gumbel_scale == 0
    assert cfg.network.value_bins == cfg.network.reward_bins == 51


def test_continuous_classic_tasks_get_the_small_control_preset():
    assert resolve_config(["--env-id", "Pendulum-v1"]).preset == "control"
    assert resolve_config(["--env-id", "dmc/CartpoleBalance", "--preset", "control"]).preset == "control"


def test_a_short_run_writes_config_and_metrics_and_caps_only_the_periodic_evaluations(tmp_path):
    run_dir = str(tmp_path / "run")
    main(["--env-id", "CartPole-v1", "--seed", "1", "--run-dir", run_dir, *TINY_FLAGS, "--eval-max-episode-steps", "3"])
    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["config"]["env_id"] == "CartPole-v1" and saved["config"]["seed"] == 1
    assert saved["derived"]["num_simulations"] == 8
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["env_steps"] for r in rows] == [40, 80]
    for row in rows:
        for key in ("env_steps", "updates", "wall_s", "train_return_mean", "eval_return_mean", "eval_return_std",
                    "eval_episodes"):
            assert key in row, key
    assert rows[-1]["updates"] > 0 and rows[-1]["eval_episodes"] == 2
    # The periodic evaluation stopped both episodes after 3 steps and scored them so far (CartPole
    # pays 1 per step and cannot fail in 3); the final one played them to the end.
    assert rows[0]["eval_capped"] == 2 and rows[0]["eval_length_mean"] == 3 and rows[0]["eval_return_mean"] == 3
    assert "eval_capped" not in rows[-1] and rows[-1]["eval_length_mean"] > 3


def test_an_unknown_env_id_fails_with_close_matches(capsys):
    err = run_cli(["--env-id", "CartPol-v1"], capsys, code=2)
    assert "CartPole-v1" in err and "gymnax" in err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--replay-ratio", "0.3"], "--replay-ratio"),
        (["--learning-starts", "50000", "--total-env-steps", "20000"], "--learning-starts"),
        (["--learning-starts", "8"], "complete windows"),
        (["--replay.capacity", "40"], "--replay.capacity"),
        (["--log-interval", "1001"], "--log-interval"),
        (["--preset", "dmc_pixels"], "--preset"),
        (["--checkpoint-interval", "300"], "--checkpoint-interval"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints"),
        (["--num-seeds", "0"], "--num-seeds"),
        (["--num-envs", "0"], "--num-envs must be >= 1"),
        (["--log-interval", "0"], "--log-interval must be >= 1"),
        (["--resume-step", "10"], "--resume-step needs --resume"),
        (["--env-id", "Breakout-v5", "--devices", "2"], "pure-JAX env"),
    ],
)
def test_impossible_settings_fail_before_compiling_with_what_to_change(flags, named, capsys, tmp_path):
    err = run_cli(["--env-id", "CartPole-v1", "--run-dir", str(tmp_path / "r"), *flags], capsys, code=2)
    assert named in err
    assert not (tmp_path / "r").exists()


def test_an_existing_run_directory_is_never_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("precious\n")
    err = run_cli(["--env-id", "CartPole-v1", "--run-dir", str(run_dir), *TINY_FLAGS], capsys, code=2)
    assert "already exists" in err
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--search.interior-children", "0"], "--search.interior-children"),
        (["--search.policy-sampled-actions", "20"], "--search.policy-sampled-actions"),
        (["--network.architecture", "conv"], "conv takes image observations"),
    ],
)
def test_impossible_continuous_settings_fail_before_compiling(flags, named, capsys, tmp_path):
    err = run_cli(["--env-id", "Pendulum-v1", "--run-dir", str(tmp_path / "r"), *flags], capsys, code=2)
    assert named in err
    assert not (tmp_path / "r").exists()


def test_a_config_saved_before_a_field_existed_resumes_with_the_behaviour_it_was_trained_with():
    from ezv.config import config_from_plain

    plain = dataclasses.asdict(resolve_config(["--env-id", "Breakout-v5"]))
    assert config_from_plain(plain).search.q_normalisation == "tree"  # the atari preset's rule, as saved
    del plain["search"]["q_normalisation"], plain["network"]["init"]
    old = config_from_plain(plain)
    assert old.search.q_normalisation == "node"  # every run before 2026-12-03 normalised per node
    assert old.network.init == "flax"


def _legacy_run_dir(tmp_path, env_id):
    """A run directory as ezv wrote it before 2026-12-03 (no `search.q_normalisation`)."""
    plain = json.loads(json.dumps(dataclasses.asdict(resolve_config(["--env-id", env_id]))))
    assert plain["search"]["q_normalisation"] == "tree"
    del plain["search"]["q_normalisation"]
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"config": plain}))
    return str(run_dir)


def test_an_envpool_dmc_run_from_before_the_action_repeat_fix_is_not_resumed(tmp_path):
    from ezv.config import ConfigError

    run_dir = _legacy_run_dir(tmp_path, "CheetahRun-v1")
    before = sorted(os.listdir(run_dir))
    with pytest.raises(ConfigError, match="physics sub-steps"):
        resolve_config(["--resume", run_dir])
    assert sorted(os.listdir(run_dir)) == before


def test_an_atari_run_from_before_the_game_length_fix_resumes_with_a_note(tmp_path, capsys):
    cfg = resolve_config(["--resume", _legacy_run_dir(tmp_path, "Breakout-v5")])
    assert cfg.search.q_normalisation == "node"
    assert "3000 agent steps" in capsys.readouterr().err


@pytest.mark.parametrize("env_id, rule", [("Breakout-v5", "tree"), ("dmc/CheetahRun", "tree"), ("CartPole-v1", "node"),
                                          ("Breakout-MinAtar", "node"), ("Pendulum-v1", "node")])
def test_reference_presets_normalise_q_per_tree_and_the_small_cpu_presets_per_node(env_id, rule):
    assert resolve_config(["--env-id", env_id]).search.q_normalisation == rule


def test_the_compilation_cache_is_on_by_default_in_the_users_cache_and_can_be_moved_or_turned_off(
        monkeypatch, tmp_path):
    import jax

    from ezv import compile_cache

    configured = jax.config.jax_compilation_cache_dir  # the test session's own cache
    max_size = jax.config.jax_compilation_cache_max_size
    monkeypatch.setenv("EZV_COMPILATION_CACHE", "off")
    assert compile_cache.enable() is None
    monkeypatch.delenv("EZV_COMPILATION_CACHE")
    assert compile_cache.enable() == configured  # a cache jax was already given is kept
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == str(tmp_path / "xdg" / "ezv" / "xla")
    monkeypatch.setenv("EZV_COMPILATION_CACHE", str(tmp_path / "mine"))
    try:
        assert compile_cache.enable() == str(tmp_path / "mine")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine") and (tmp_path / "mine").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", configured)
        jax.config.update("jax_compilation_cache_max_size", max_size)
