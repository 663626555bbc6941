"""Published DMC curves (TD-MPC2, DreamerV3, SAC) beside ezv's, on ezv's env-step axis."""

import json
import os

import yaml

from ezv import plot, scores


def test_published_steps_are_control_steps_and_are_shown_in_ezv_env_steps():
    curves = scores.published_curve("dmc/CartpoleSwingup")
    assert set(curves) == {"tdmpc2", "dreamerv3", "sac"}
    # The source's step 100k (control steps, action repeat 2) is 50k ezv env steps; its three
    # TD-MPC2 seeds read 860.5, 789.8 and 867.9 there.
    step, mean, seeds = next(p for p in curves["tdmpc2"] if p[0] == 50_000)
    assert seeds == 3 and abs(mean - (860.5 + 789.8 + 867.9) / 3) < 0.05
    assert scores.published_curve("CartpoleSwingup-v1") == curves  # envpool ids too
    assert scores.published_curve("dmc/BallInCupCatch")  # dm_control's ball_in_cup is "cup" there
    assert scores.published_curve("CartPole-v1") == {}  # gymnax's CartPole is not a DMC task


def fake_dmc_run(tmp_path, steps):
    run = tmp_path / "swingup"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"env_id": "dmc/CartpoleSwingup", "seed": 0}}))
    with open(run / "metrics.jsonl", "w") as f:
        for seed in (0, 1):
            for s in steps:
                f.write(json.dumps({"seed": seed, "env_steps": s, "eval_return_mean": s / 100 + seed,
                                    "wall_s": 1.0}) + "\n")
    return str(run)


def test_plot_draws_published_curves_up_to_the_first_point_past_the_run(tmp_path):
    shown = plot.published_in_range("dmc/CartpoleSwingup", 60_000)
    assert [p[0] for p in shown["tdmpc2"]] == [0, 50_000, 100_000]
    out = str(tmp_path / "curves.png")
    plot.main([fake_dmc_run(tmp_path, range(10_000, 60_001, 10_000)), "--out", out])
    assert os.path.getsize(out) > 10_000


def test_learning_benchmark_tabulates_ezv_beside_the_published_points(tmp_path, capsys):
    from benchmarks import learning

    learning.main(["--from-runs", fake_dmc_run(tmp_path, range(10_000, 100_001, 10_000))])
    text = capsys.readouterr().out
    comparison = text[text.index("beside published curves"):]
    line = next(x for x in comparison.splitlines() if x.startswith("| ") and "50000 |" in x)
    assert "500.5 ± 0.5 (2)" in line and "839.4 (3)" in line and "100000" in line  # control steps
    assert "control_steps" in text
