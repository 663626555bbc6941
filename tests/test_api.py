"""ezv from Python (`ezv.Agent`): create, train (pause and continue), evaluate, act, export with a model card,
load, best, metrics; the same run as the CLI's."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import yaml
from cli_helpers import read_rows, without_timing
from tiny import TINY

import ezv
from ezv import checkpoint as ckpt
from ezv.best import BestKeeper, best_file, read_index
from ezv.config import ConfigError

# The CLI's LONG tiny run (`straight_run`) as Agent overrides: the same config and program, with checkpoints
# only at the end (run settings, which learning does not see), so that only a pause writes one midway.
LONG_SETTINGS = {"total_env_steps": 400, "checkpoint_interval": 0, "keep_checkpoints": 3, "quiet": True}


@pytest.fixture(scope="module")
def paused_and_continued(tmp_path_factory):
    """The LONG tiny CartPole run through the API: trained to 200 env steps (a pause), then on to the end by the
    same Agent."""
    run_dir = str(tmp_path_factory.mktemp("api") / "run")
    agent = ezv.Agent("CartPole-v1", run_dir=run_dir, **{**TINY, **LONG_SETTINGS})
    paused = agent.train(200)
    rows_at_pause, checkpoints_at_pause = read_rows(run_dir), ckpt.available_steps(run_dir)
    finished = agent.train()
    return agent, paused, (rows_at_pause, checkpoints_at_pause), finished, run_dir


def test_overrides_reach_nested_fields_and_bad_ones_are_named_before_compiling():
    cfg = ezv.make_config("CartPole-v1", learner__batch_size=32, search={"num_simulations": 4})
    assert (cfg.preset, cfg.learner.batch_size, cfg.search.num_simulations) == ("classic", 32, 4)
    assert cfg.learner.unroll_steps == ezv.make_config("CartPole-v1").learner.unroll_steps  # the rest: the preset's
    with pytest.raises(ConfigError, match=r"learner\.batch_sise \(did you mean learner\.batch_size\?\)"):
        ezv.Agent("CartPole-v1", learner__batch_sise=32)
    with pytest.raises(ConfigError, match="learner.batch_size must be an integer"):
        ezv.Agent("CartPole-v1", learner__batch_size="big")
    with pytest.raises(ConfigError, match="--log-interval"):  # the run's validation, before anything compiles
        ezv.Agent("CartPole-v1", log_interval=30)
    with pytest.raises(ezv.envs.UnknownEnvError, match="CartPole-v1"):
        ezv.Agent("CartPole-v2")


def test_a_paused_run_continues_with_the_metrics_of_an_uninterrupted_one(paused_and_continued, straight_run):
    _, paused, (rows_at_pause, checkpoints_at_pause), finished, run_dir = paused_and_continued
    assert (paused.env_steps, paused.finished) == (200, False)
    assert [r["env_steps"] for r in rows_at_pause] == list(range(40, 201, 40))
    assert checkpoints_at_pause == [200]  # no periodic checkpoints: the pause wrote this one
    assert (finished.env_steps, finished.finished) == (400, True)
    assert ckpt.available_steps(run_dir) == [200, 400]
    # The CLI's uninterrupted run of the same config: identical metrics, row for row.
    assert without_timing(read_rows(run_dir)) == without_timing(read_rows(straight_run))


def test_train_takes_an_absolute_step_count_and_only_run_settings(paused_and_continued):
    agent, *_ = paused_and_continued
    with pytest.raises(ConfigError, match="run settings only; learner"):
        agent.train(learner={"batch_size": 4})
    with pytest.raises(ConfigError, match="multiple of log_interval"):
        agent.train(410)
    with pytest.raises(ConfigError, match=">= 1"):
        agent.train(-40)


def test_evaluate_export_load_and_act_agree_with_the_run(paused_and_continued, tmp_path):
    agent, *_, run_dir = paused_and_continued
    result = agent.evaluate(episodes=4, seed=3)
    assert result.seeds == (0,) and result.all_returns.size + result.unfinished == 4 and np.isfinite(result.mean)
    assert result.human_normalized is None  # not an Atari game

    paths = agent.export(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [f"CartPole-v1-s0-e400-t{int(agent.metrics['updates'][-1])}.ezv"]
    from_file = ezv.Agent.from_file(paths[0])
    again = from_file.evaluate(episodes=4, seed=3)
    assert [r.tolist() for r in again.returns] == [r.tolist() for r in result.returns]

    loaded = ezv.load_agent(paths[0])
    obs = np.random.default_rng(0).normal(size=(16, *loaded.obs_shape)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(np.asarray(agent.act(obs, key)), np.asarray(loaded.act(obs, key)))
    with pytest.raises(ValueError, match="hold the networks only"):
        from_file.train()


def test_an_exported_agent_has_a_model_card_that_says_what_it_is_and_how_to_run_it(paused_and_continued, tmp_path):
    agent, *_ = paused_and_continued
    path = agent.export(str(tmp_path))[0]
    card = open(path[: -len(".ezv")] + ".md").read()
    last_eval = agent.metrics.evaluations["eval_return_mean"][-1]
    for expected in ("# CartPole-v1: an ezv agent (seed 0)", "400 env steps", "## Evaluation", f"{last_eval:.2f} ±",
                     "greedy search", "| search | Gumbel (EZ-V2), 8 simulations |", "## Use",
                     f"python -m ezv.evaluate {os.path.basename(path)}", "ezv.load_agent("):
        assert expected in card, expected


def test_best_is_the_best_evaluation_and_survives_keep_checkpoints(straight_run):
    evals = [r for r in read_rows(straight_run) if "eval_return_mean" in r]
    best_row = max(evals, key=lambda r: r["eval_return_mean"])  # the first of equals: later ties do not replace it
    entry = read_index(straight_run)[0]
    assert (entry["env_steps"], entry["eval_return_mean"]) == (best_row["env_steps"], best_row["eval_return_mean"])
    assert os.path.isfile(best_file(straight_run, 0))
    best = ezv.Agent.from_run(straight_run).best
    model = best._source()[2][0]
    if entry["env_steps"] in ckpt.available_steps(straight_run):  # the same networks as that checkpoint's
        saved = ckpt.restore_model(straight_run, entry["env_steps"])
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(saved["params"]), jax.device_get(model["params"]))
    else:  # --keep-checkpoints 3 removed that checkpoint; the best file stays
        assert entry["env_steps"] < min(ckpt.available_steps(straight_run))


def test_the_best_keeper_replaces_only_on_a_strictly_better_evaluation_and_sets_aside_a_later_future(tmp_path):
    import ezv.envs as envs
    from ezv.model import EZModel
    from tiny import tiny_config

    cfg = tiny_config("classic")
    env = envs.make("CartPole-v1", 1)
    variables = EZModel(cfg, env.spec).init_variables(jax.random.PRNGKey(0))
    run_dir = str(tmp_path)
    keeper = BestKeeper(run_dir, cfg, env.spec)

    def offer(steps, score):
        return keeper.offer(0, {"env_steps": steps, "updates": steps, "eval_return_mean": score}, steps,
                            lambda: variables)

    assert offer(40, 10.0) and not offer(80, 10.0) and offer(120, 12.0) and not offer(160, 3.0)
    capped = {"env_steps": 140, "updates": 140, "eval_return_mean": 50.0, "eval_capped": 2}
    assert not keeper.offer(0, capped, 140, lambda: variables)  # scored so far, not played out: not compared
    assert read_index(run_dir)[0]["env_steps"] == 120
    BestKeeper(run_dir, cfg, env.spec, resumed_at=80)  # resuming from 80: the best at 120 is another future
    assert read_index(run_dir) == {} and not os.path.exists(best_file(run_dir, 0))
    assert os.listdir(os.path.join(run_dir, "checkpoints-set-aside")) == ["best-seed0-p120.ezv"]


def test_metrics_are_a_table(paused_and_continued):
    agent, *_ = paused_and_continued
    table = agent.metrics
    assert len(table) == 10 and table["env_steps"].tolist() == list(range(40, 401, 40))
    assert len(table.evaluations) == 10 and np.all(np.isfinite(table.evaluations["eval_return_mean"]))
    with pytest.raises(KeyError, match="no column 'nope'"):
        table["nope"]
    assert list(table.to_pandas()["env_steps"]) == list(range(40, 401, 40))


def test_a_run_started_from_python_is_a_cli_run(paused_and_continued):
    *_, run_dir = paused_and_continued
    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)["config"]
    assert saved["env_id"] == "CartPole-v1" and saved["preset"] == "classic"
    assert json.dumps(saved["learner"]["batch_size"]) == str(TINY["learner"]["batch_size"])


def test_the_documented_surface_is_listed_in_the_package():
    assert set(ezv.__all__) >= {"Agent", "Config", "Evaluation", "TrainSummary", "MetricsTable", "envs", "load_agent",
                                "make_config"}
    for name in ezv.__all__:
        assert getattr(ezv, name) is not None


def test_a_checkpoint_folder_is_an_agent_and_an_existing_run_dir_is_not_overwritten(paused_and_continued):
    agent, *_, run_dir = paused_and_continued
    step = ckpt.available_steps(run_dir)[0]
    older = ezv.Agent.from_run(os.path.join(run_dir, "checkpoints", str(step)))
    assert older._source()[3]["checkpoint"] == step and older.run_dir == run_dir
    with pytest.raises(FileExistsError, match="from_run"):
        ezv.Agent("CartPole-v1", run_dir=run_dir, **{**TINY, **LONG_SETTINGS}).train()


def test_agent_files_of_different_configs_are_not_one_agents_seeds(paused_and_continued, tmp_path):
    agent, *_ = paused_and_continued
    path = agent.export(str(tmp_path))[0]
    other = ezv.Agent("CartPole-v1", run_dir=str(tmp_path / "other"), **{**TINY, **LONG_SETTINGS})
    other.config = dataclasses.replace(other.config, learner=dataclasses.replace(other.config.learner, batch_size=4))
    from ezv.inference import load_agent, write_agent

    loaded = load_agent(path)
    foreign = write_agent(str(tmp_path / "foreign.ezv"), other.config, loaded.spec, loaded.variables, {"seed": 1})
    with pytest.raises(ValueError, match="learner.batch_size"):
        ezv.Agent.from_file(path, foreign)
    with pytest.raises(ValueError, match="one file per seed"):
        ezv.Agent.from_file(path, path)
