"""A run's checkpoints: the run directory, kill -9 and exact resume, rewinding, refusals, divergence,
seed sweeps, and checkpoints of any state."""

from __future__ import annotations

import json
import os
import signal
import time

import jax
import numpy as np
import pytest
import yaml

from cli_helpers import LONG, TINY_FLAGS, read_rows, run_cli, train_process, without_timing

from ezv import checkpoint as ckpt
from ezv.train import main


def test_a_run_directory_holds_config_metrics_tensorboard_and_the_newest_checkpoints(straight_run):
    assert os.path.isfile(os.path.join(straight_run, "config.yaml"))
    assert [r["env_steps"] for r in read_rows(straight_run)] == list(range(40, 401, 40))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(straight_run, "tensorboard")))
    assert ckpt.available_steps(straight_run) == [320, 360, 400]  # every 40 env steps, newest 3 kept
    meta = ckpt.read_meta(straight_run, 400)
    assert meta["env_steps"] == 400 and meta["updates"] == read_rows(straight_run)[-1]["updates"] > 0


def long_run_with_a_checkpoint(run_dir: str, *extra: str):
    """The LONG tiny run (`extra` flags on top) in a child process, once it has written its first
    checkpoint (still running)."""
    proc = train_process(["--env-id", "CartPole-v1", "--run-dir", run_dir, *TINY_FLAGS, *LONG, *extra])
    deadline = time.time() + 600
    while not ckpt.available_steps(run_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()[1][-2000:]}"
    return proc


def test_kill_minus_9_then_resume_gives_the_metrics_of_an_uninterrupted_run(straight_run, tmp_path):
    run_dir = str(tmp_path / "killed")
    proc = long_run_with_a_checkpoint(run_dir)
    os.kill(proc.pid, signal.SIGKILL)  # at whatever point it has reached, a save included
    proc.wait()
    kept = ckpt.available_steps(run_dir)
    assert kept and kept[-1] < 400
    main(["--resume", run_dir])
    resumed = without_timing(read_rows(run_dir))
    assert resumed == without_timing(read_rows(straight_run))
    assert ckpt.available_steps(run_dir)[-1] == 400


def test_ctrl_c_stops_a_run_without_a_traceback_and_says_how_to_resume_it(tmp_path):
    run_dir = str(tmp_path / "interrupted")
    # 10x LONG's env steps: on a loaded machine the first checkpoint can become visible only as a 400-step
    # run ends, and a SIGINT during its teardown would find nothing to interrupt.
    # A foreground run, as a user's Ctrl-C finds it, however pytest was started (`cli_helpers.foreground_sigint`).
    proc = long_run_with_a_checkpoint(run_dir, "--total-env-steps", "4000")
    os.kill(proc.pid, signal.SIGINT)
    # Python raises the interrupt once the main thread is back from XLA (a compile or chunk in progress), then the
    # run closes its writers and pending checkpoint: over 120 s once, with two learning runs and two test
    # processes on the 2 cores (58 s with one learning run).
    try:
        out, err = proc.communicate(timeout=300)
    finally:  # an interrupt that did not take must not leave the long run behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out[-1000:], err[-2000:])
    assert "Traceback" not in err and f"--resume {run_dir}" in out, (out[-2000:], err[-2000:])
    assert ckpt.available_steps(run_dir), "the checkpoints written before the interrupt are kept"


def test_resume_continues_a_finished_run_with_more_env_steps(straight_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "extended")
    shutil.copytree(straight_run, run_dir)
    run_cli(["--resume", run_dir, "--total-env-steps", "480"], capsys)
    rows = read_rows(run_dir)
    assert [r["env_steps"] for r in rows][-3:] == [400, 440, 480]
    assert os.path.exists(os.path.join(run_dir, "config.1.yaml")), "the previous config is kept"
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert yaml.safe_load(f)["config"]["total_env_steps"] == 480


def test_a_run_saved_before_newer_config_fields_existed_resumes(straight_run, tmp_path, capsys):
    """Fields added to the config since a run was saved take the values ezv used before them, in the
    run's config.yaml and in its checkpoints' metadata alike, so the resume finds no difference."""
    import shutil

    run_dir = str(tmp_path / "older")
    shutil.copytree(straight_run, run_dir)

    def strip(config):
        del config["search"]["q_normalisation"], config["network"]["compute_dtype"], config["eval_max_episode_steps"]
        del config["network"]["state_norm"]

    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    strip(saved["config"])
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(saved, f)
    meta_path = os.path.join(run_dir, "checkpoints", "400", "meta", "metadata")
    with open(meta_path) as f:
        meta = json.load(f)
    strip(meta["config"])
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    run_cli(["--resume", run_dir, "--total-env-steps", "440"], capsys)
    assert [r["env_steps"] for r in read_rows(run_dir)][-2:] == [400, 440]


def test_resume_rewinds_metrics_written_after_the_checkpoint_without_deleting_them(straight_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "rewound")
    shutil.copytree(straight_run, run_dir)
    shutil.rmtree(os.path.join(run_dir, "checkpoints", "400"))  # as if killed after logging 400, before saving it
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write('{"seed": 0, "env_st')  # and mid-line
    run_cli(["--resume", run_dir], capsys)
    assert without_timing(read_rows(run_dir)) == without_timing(read_rows(straight_run))
    with open(os.path.join(run_dir, "metrics.discarded.jsonl")) as f:
        header, row, cut = f.read().splitlines()
    assert json.loads(header)["discarded_on_resume_from"] == 360
    assert json.loads(row)["env_steps"] == 400  # the row the checkpoint did not cover
    assert cut == '{"seed": 0, "env_st'  # kept as it was


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--network.latent-dim", "32"], "network.latent_dim"),
        (["--num-envs", "8"], "num_envs"),
        (["--env-id", "Acrobot-v1"], "is a 'CartPole-v1' run"),
    ],
)
def test_resume_refuses_an_incompatible_config_and_names_what_differs(straight_run, flags, named, capsys):
    before = sorted(os.listdir(straight_run))
    err = run_cli(["--resume", straight_run, *flags], capsys, code=2)
    assert named in err
    assert sorted(os.listdir(straight_run)) == before


def test_resume_of_a_missing_or_foreign_directory_says_so(tmp_path, capsys):
    err = run_cli(["--resume", str(tmp_path / "nowhere")], capsys, code=2)
    assert "no such directory" in err
    (tmp_path / "notarun").mkdir()
    err = run_cli(["--resume", str(tmp_path / "notarun")], capsys, code=2)
    assert "not an ezv run directory" in err


def test_a_corrupt_checkpoint_gives_a_clear_error_and_nothing_is_deleted(straight_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "corrupt")
    shutil.copytree(straight_run, run_dir)
    state_dir = os.path.join(run_dir, "checkpoints", "400", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name != "commit_success.txt" and not name.startswith("_"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    files_before = sorted(os.path.relpath(os.path.join(r, f), run_dir) for r, _, fs in os.walk(run_dir) for f in fs)
    err = run_cli(["--resume", run_dir], capsys, code=2)
    assert "checkpoints/400" in err and "--resume-step" in err
    assert "is damaged" in err and "state/" in err  # named file by file from the checksums saved with it
    files_after = sorted(os.path.relpath(os.path.join(r, f), run_dir) for r, _, fs in os.walk(run_dir) for f in fs)
    assert files_after == files_before
    run_cli(["--resume", run_dir, "--resume-step", "360"], capsys)  # an older checkpoint still works
    assert read_rows(run_dir)[-1]["env_steps"] == 400
    assert ckpt.available_steps(run_dir)[-1] == 400  # saved anew; the damaged one was set aside, not deleted
    assert len(os.listdir(os.path.join(run_dir, "checkpoints-set-aside"))) == 1


def test_a_diverging_run_stops_at_the_update_and_term_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run_dir = str(tmp_path / "diverge")
    err = run_cli(["--env-id", "CartPole-v1", "--run-dir", run_dir, *TINY_FLAGS, "--checkpoint-interval", "40",
                   "--learner.learning-rate", "1e12", "--learner.max-grad-norm", "1e30"], capsys, code=3)
    assert "became non-finite at update" in err and "checkpoints/40" in err
    assert any(term in err for term in ("loss", "grad_norm"))
    assert ckpt.available_steps(run_dir) == [40]


def test_seed_sweep_trains_every_seed_in_one_program_and_logs_each(tmp_path, capsys):
    run_dir = str(tmp_path / "seeds")
    run_cli(["--env-id", "CartPole-v1", "--seed", "3", "--num-seeds", "2", "--run-dir", run_dir, *TINY_FLAGS], capsys)
    rows = read_rows(run_dir)
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(40, 3), (40, 4), (80, 3), (80, 4)]
    assert all(r["eval_episodes"] == 2 for r in rows)
    # The seeds are independent runs: different episodes, different networks.
    assert rows[2]["loss"] != rows[3]["loss"]
    from ezv.export import export_run

    files = export_run(run_dir, str(tmp_path / "agents"))
    assert [os.path.basename(f) for f in files] == ["CartPole-v1-s3-e80-t20.ezv", "CartPole-v1-s4-e80-t20.ezv"]


ENVPOOL_TINY = [
    "--env-id", "CheetahRun-v1", "--preset", "control", "--search.num-simulations", "4",
    "--search.num-sampled-actions", "4", "--search.policy-sampled-actions", "1", "--learner.entropy-samples", "8",
    "--env-options", "max_episode_steps", "8",
]


def test_envpool_seeds_share_one_pool_and_a_resume_restarts_its_episodes(tmp_path, capsys):
    run_dir = str(tmp_path / "pool")
    run_cli([*ENVPOOL_TINY, "--num-seeds", "2", "--run-dir", run_dir, *TINY_FLAGS], capsys)
    rows = read_rows(run_dir)
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(40, 0), (40, 1), (80, 0), (80, 1)]
    assert rows[2]["train_episodes"] > 0 and rows[2]["loss"] != rows[3]["loss"]
    out = run_cli(["--resume", run_dir, "--total-env-steps", "120"], capsys).out
    assert "fresh episodes" in out
    rows = read_rows(run_dir)
    assert [(r["env_steps"], r["seed"]) for r in rows][-2:] == [(120, 0), (120, 1)]
    assert all(np.isfinite(r["loss"]) for r in rows[-2:])


def test_wandb_is_optional_and_asking_for_it_without_the_package_says_how(tmp_path, capsys):
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    err = run_cli(["--env-id", "CartPole-v1", "--run-dir", str(tmp_path / "r"), *TINY_FLAGS, "--wandb"], capsys, code=2)
    assert "pip install wandb" in err
    assert not (tmp_path / "r").exists()


def test_checkpoints_round_trip_states_with_empty_arrays(tmp_path):
    # MJX data holds zero-size arrays (e.g. `act` of a model without actuator state), which orbax
    # cannot write as they are.
    import jax.numpy as jnp

    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "env": {"act": jnp.zeros((4, 0)), "qpos": jnp.ones(4)},
             "step": jnp.int32(7)}
    saver = ckpt.Checkpointer(str(tmp_path), keep=1)
    saver.save(10, state, {"params": state["params"]}, {"env_steps": 10})
    saver.close()
    assert ckpt.available_steps(str(tmp_path)) == [10]
    restored = ckpt.restore_state(str(tmp_path), 10, ckpt.abstract(state))
    def signature(tree):
        return jax.tree.map(lambda x: (x.shape, str(x.dtype)), tree)

    assert signature(restored) == signature(state)
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert int(restored["step"]) == 7


@pytest.mark.slow
def test_a_playground_run_resumes_exactly(tmp_path, capsys):
    flags = ["--env-id", "dmc/CartpoleBalance", "--preset", "control", "--search.num-simulations", "4",
             "--search.num-sampled-actions", "4", "--search.policy-sampled-actions", "1",
             "--learner.entropy-samples", "8", *TINY_FLAGS, "--checkpoint-interval", "40", "--keep-checkpoints", "3"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    run_cli([*flags, "--total-env-steps", "120", "--run-dir", straight], capsys)
    run_cli([*flags, "--total-env-steps", "120", "--run-dir", split], capsys)
    import shutil

    for later in (80, 120):  # as if killed after the first checkpoint
        shutil.rmtree(os.path.join(split, "checkpoints", str(later)))
    run_cli(["--resume", split], capsys)
    assert without_timing(read_rows(split)) == without_timing(read_rows(straight))
