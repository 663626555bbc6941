"""After a run: exporting an agent, loading and evaluating it, human-normalised scores, videos, and plots."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import yaml

from ezv import checkpoint as ckpt


def test_export_then_load_agent_and_evaluate_from_the_file_or_the_run(straight_run, tmp_path, capsys):
    import ezv
    from ezv import evaluate
    from ezv.export import export_run

    (path,) = export_run(straight_run, str(tmp_path))
    meta = ckpt.read_meta(straight_run, 400)
    assert os.path.basename(path) == f"CartPole-v1-s0-e400-t{meta['updates']}.ezv"
    agent = ezv.load_agent(path)
    obs = np.zeros((5,) + agent.obs_shape, np.float32)
    actions = np.asarray(agent.act(obs, jax.random.PRNGKey(0)))
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1}
    assert int(agent.act(obs[0], jax.random.PRNGKey(0))) in (0, 1)
    from_file = evaluate.main([path, "--episodes", "4", "--json", str(tmp_path / "e.json")])
    from_run = evaluate.main([straight_run, "--episodes", "4"])
    assert from_file["seeds"]["0"]["returns"] == from_run["seeds"]["0"]["returns"]
    assert json.load(open(tmp_path / "e.json"))["episodes"] == 4


def test_evaluate_rejects_what_it_cannot_read(tmp_path, capsys):
    from ezv import evaluate

    bad = tmp_path / "agent.ezv"
    bad.write_bytes(b"not an agent")
    for source in (str(bad), str(tmp_path / "missing")):
        with pytest.raises(SystemExit) as info:
            evaluate.main([source])
        assert info.value.code == 2
    assert "not" in capsys.readouterr().err


def test_atari_scores_are_human_normalised_with_the_shipped_table():
    from ezv import evaluate, scores

    row = evaluate.summarize("Breakout-v5", {"returns": np.array([1.7, 30.5 + 1.7]), "lengths": np.array([10, 10]),
                                             "finished": np.array([True, True])})
    random_, human = scores.atari_table()["Breakout"]["random"], scores.atari_table()["Breakout"]["human"]
    assert row["human_normalized"] == pytest.approx((row["return_mean"] - random_) / (human - random_))
    assert scores.iqm([0, 1, 2, 3, 100, -100, 4, 5]) == pytest.approx(np.mean([1, 2, 3, 4]))
    ref = scores.reference_aggregates()
    assert ref["mean"] == pytest.approx(2.68, abs=0.01) and ref["median"] == pytest.approx(1.235, abs=0.01)


def test_video_of_an_image_env_episode(tmp_path):
    import dataclasses

    import ezv.envs as envs
    from ezv.agent import CompiledAgent
    from ezv.evaluate import record_video
    from ezv.train import resolve_config

    cfg = resolve_config(["--env-id", "Breakout-MinAtar", "--network.latent-dim", "16", "--network.mlp-hidden", "16",
                          "--network.mlp-blocks", "1", "--env-options", "max_episode_steps", "30"])
    env = envs.make(cfg.env_id, 1, 0, **cfg.env_options)
    state = CompiledAgent(cfg, env).init(jax.random.PRNGKey(0))
    path = str(tmp_path / "episode.gif")
    length = record_video(dataclasses.replace(cfg), env.spec, state.variables,
                          path, seed=0)
    import imageio.v2 as imageio

    frames = imageio.mimread(path)
    assert 1 <= length <= 30 and len(frames) == length + 1 and frames[0].shape == (320, 320, 3)


def test_plot_draws_curves_and_tabulates_human_normalised_scores(straight_run, tmp_path):
    from ezv import plot

    # A finished Atari run as metrics (two seeds): the table must normalise and aggregate it.
    atari = tmp_path / "breakout"
    atari.mkdir()
    (atari / "config.yaml").write_text(yaml.safe_dump({"config": {"env_id": "Breakout-v5", "seed": 0}}))
    with open(atari / "metrics.jsonl", "w") as f:
        for seed, value in ((0, 10.0), (1, 30.0)):
            f.write(json.dumps({"seed": seed, "env_steps": 100_000, "eval_return_mean": value}) + "\n")
    out = str(tmp_path / "curves.png")
    table = plot.main([straight_run, str(atari), "--out", out, "--table", str(tmp_path / "t.md")])
    assert os.path.getsize(out) > 10_000
    from ezv import scores

    expected = scores.human_normalized("Breakout", 20.0)
    assert f"{expected:.3f}" in table and "IQM" in table and "CartPole-v1" in table


def test_video_of_a_classic_control_episode_is_drawn_from_its_observations(straight_run, tmp_path, capsys):
    from ezv import evaluate

    path = str(tmp_path / "cartpole.mp4")
    report = evaluate.main([straight_run, "--episodes", "2", "--video", path])
    assert report["video"] == path and os.path.getsize(path) > 1_000
    import imageio.v2 as imageio

    frames = imageio.mimread(path, memtest=False)
    assert len(frames) >= 2 and frames[0].shape == (400, 400, 3)
    assert not np.array_equal(frames[0], frames[-1]), "the pole moves"


def test_plot_draws_one_curve_and_one_table_per_preset_of_an_env(tmp_path):
    from ezv import plot

    runs = []
    for preset, value in (("classic", 400.0), ("ez1_classic", 300.0), ("ez1_classic", 200.0)):
        run = tmp_path / f"{preset}-{value:.0f}"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"config": {"env_id": "CartPole-v1", "seed": 0,
                                                                    "preset": preset}}))
        (run / "metrics.jsonl").write_text(json.dumps({"seed": 0, "env_steps": 400, "eval_return_mean": value}) + "\n")
        runs.append(str(run))
    envs = plot.collect(runs)
    assert {p: len(e["curves"]) for p, e in envs["CartPole-v1"].items()} == {"classic": 1, "ez1_classic": 2}
    table = plot.main([*runs, "--out", str(tmp_path / "c.png")])
    assert "Preset `classic`" in table and "400.0 ± 0.0" in table
    assert "Preset `ez1_classic`" in table and "250.0 ± 50.0" in table


def test_plot_tells_runs_at_different_execution_delays_apart():
    from ezv.plot import variant_name

    assert variant_name({"preset": "classic", "delay": 0}) == "classic"
    assert variant_name({"preset": "classic", "delay": 15, "stochastic_delay": True, "forward": True}) == (
        "classic, delay ≤ 15 stochastic, forward")
    assert variant_name({"preset": "classic", "delay": 5, "forward": False}) == "classic, delay 5, oblivious"


def test_every_curve_of_a_panel_gets_its_own_style_beyond_the_six_colours():
    from ezv.plot import curve_style

    styles = [curve_style(i) for i in range(18)]  # a delay matrix has 8, a mode-by-delay grid more
    assert len(set(styles)) == 18
    assert not {color for color, _ in styles} & {"tab:red", "tab:green", "tab:purple", "tab:orange"}
    assert ":" not in {linestyle for _, linestyle in styles}


def test_plot_labels_env_steps_compactly_so_that_neighbouring_ticks_do_not_run_together():
    from ezv.plot import env_steps_label

    assert [env_steps_label(x) for x in (0, 500, 4000, 12_500, 110_000, 1_200_000)] == [
        "0", "500", "4k", "12.5k", "110k", "1.2M"]
