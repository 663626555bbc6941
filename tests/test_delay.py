"""Execution delays (Delayed-EfficientZero): the wrapper's queue semantics, the delay walk, planning through
the pending actions, and delayed runs through the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from ezv import envs
from ezv.config import ConfigError, validate
from ezv.envs.core import Discrete, EnvSpec
from ezv.envs.delay import delayed, pending_view, walk_delay
from ezv.envs.functional import SingleEnv, make_vec_env
from ezv.forward import plan_queue, unroll_pending


def walker_env(num_envs: int, max_episode_steps: int = 10_000, seed: int = 0):
    """A deterministic toy env: the position moves by action − 1 (3 actions); obs = [position, executed action]."""

    def reset(key):
        start = jax.random.randint(key, (), -5, 6)
        return start, jnp.stack([start, -1]).astype(jnp.float32)

    def step(position, action, key):
        del key
        position = position + action - 1
        return position, jnp.stack([position, action]).astype(jnp.float32), jnp.float32(0.0), jnp.bool_(False)

    spec = EnvSpec(env_id="Walker-toy", backend="gymnax", domain="misc", obs_shape=(2,), obs_dtype=np.dtype("float32"),
                   action_space=Discrete(3), max_episode_steps=max_episode_steps)
    return make_vec_env(spec, num_envs, seed, SingleEnv(reset=reset, step=step))


def reference_execution(initial_queue, decisions, delays, m):
    """The rule in plain Python: at step t the env executes the newest decision made in [t − M, t] that is due
    (decided at s under delay δ: due from s + δ). The initial queue was decided at −M..−1 under delay M."""
    history = [(s - m, a, m) for s, a in enumerate(initial_queue)]
    executed = []
    for t, (a, d) in enumerate(zip(decisions, delays)):
        history.append((t, a, d))
        due = [(s, x) for s, x, delta in history if t - m <= s <= t and s + delta <= t]
        executed.append(max(due)[1])
    return executed


def run_with_delays(env, key, decisions, delays):
    """Step `env` (1 env) with these decisions, forcing the delay of each decision; -> executed actions,
    the observations and the first state's queue."""
    state, ts = env.reset(key)
    queue = [int(a) for a in np.asarray(ts.delay.pending[0])]
    executed, views = [], []
    step = jax.jit(env.step)
    for a, d in zip(decisions, delays):
        state = state.replace(delay=jnp.array([d], jnp.int32))
        state, ts = step(state, jnp.array([a], jnp.int32))
        executed.append(int(ts.delay.executed[0]))
        views.append(ts)
    return executed, views, queue


def test_a_constant_delay_is_a_fifo_with_lag_m_after_the_initial_queue():
    m = 4
    env = delayed(walker_env(1), m)
    decisions = [0, 1, 2, 2, 1, 0, 0, 2, 1, 1]
    executed, _, queue = run_with_delays(env, jax.random.PRNGKey(0), decisions, [m] * len(decisions))
    assert executed == queue + decisions[: len(decisions) - m]


def test_a_shrinking_delay_skips_and_a_growing_one_repeats_the_last_executed_action():
    m = 2
    env = delayed(walker_env(1), m)
    # Initial queue q0, q1 (due at 0 and 1). t=1: a1 decided with delay 0 is due at once and newer than q1, so q1
    # is never executed; t=2: a2 has delay 1, a0 (due 2) is older than a1 (due 1): a1 repeats; t=3: a2 is due.
    decisions, delays = [0, 1, 2, 0], [2, 0, 1, 2]
    executed, _, (q0, q1) = run_with_delays(env, jax.random.PRNGKey(1), decisions, delays)
    assert executed == [q0, 1, 1, 2]
    # A growing delay 0, 0, 1, 2, 2: at t=2 nothing new is due (a2 waits 1), so a1 executes again; a2 (due 3)
    # executes at t=3 and again at t=4, where a3 and a4 still wait.
    executed, _, _ = run_with_delays(env, jax.random.PRNGKey(1), [0, 1, 2, 0, 1], [0, 0, 1, 2, 2])
    assert executed == [0, 1, 1, 2, 2]


def test_the_queue_follows_the_newest_due_rule_for_any_delay_sequence():
    m = 5
    env = delayed(walker_env(1), m)
    rng = np.random.default_rng(0)
    for trial in range(3):
        decisions = [int(a) for a in rng.integers(0, 3, 40)]
        delays = [int(d) for d in rng.integers(0, m + 1, 40)]  # any jumps, not only the walk's ±1
        executed, _, queue = run_with_delays(env, jax.random.PRNGKey(trial), decisions, delays)
        assert executed == reference_execution(queue, decisions, delays, m)


def test_delay_zero_is_the_undelayed_env_step_for_step():
    inner = walker_env(3, max_episode_steps=7)
    env = delayed(inner, 0, stochastic=True)
    key = jax.random.PRNGKey(3)
    (s1, t1), (s2, t2) = inner.reset(key), env.reset(key)
    actions = jax.random.randint(jax.random.PRNGKey(4), (20, 3), 0, 3)
    for a in actions:
        s1, t1 = inner.step(s1, a)
        s2, t2 = env.step(s2, a)
        assert jax.tree.all(jax.tree.map(jnp.array_equal, t1, t2.replace(delay=None)))
        assert (np.asarray(t2.delay.delay) == 0).all()


def test_the_stochastic_delay_walks_to_the_uniform_law_and_a_constant_one_never_moves():
    m, envs_, steps = 5, 4000, 300
    key = jax.random.PRNGKey(0)

    def walk(delay, k):
        delay = walk_delay(k, delay, 0.2, 0, m)
        return delay, delay

    _, path = jax.lax.scan(walk, jnp.full((envs_,), m, jnp.int32), jax.random.split(key, steps))
    frequencies = np.bincount(np.asarray(path[-1]), minlength=m + 1) / envs_
    np.testing.assert_allclose(frequencies, 1 / (m + 1), atol=0.03)
    path = np.asarray(path)
    moves, interior = np.diff(path, axis=0), (path[:-1] > 0) & (path[:-1] < m)
    assert np.abs(moves).max() == 1  # ±1 with probability 0.2 each way away from the bounds
    np.testing.assert_allclose([np.mean(moves[interior] == -1), np.mean(moves[interior] == 1)], 0.2, atol=0.01)
    constant = delayed(walker_env(2), m)
    state, ts = constant.reset(key)
    for a in range(5):
        state, ts = constant.step(state, jnp.array([a % 3, 0]))
        assert (np.asarray(ts.delay.delay) == m).all()


def test_a_planned_initial_queue_executes_in_order_and_a_new_episode_starts_a_fresh_queue():
    m = 3
    env = delayed(walker_env(2, max_episode_steps=5), m, stochastic=True)
    state, ts = env.reset(jax.random.PRNGKey(0))
    plan = jnp.array([[2, 0, 1], [1, 1, 2]])
    state = env.with_queue(state, plan, jnp.array([True, True]))
    executed = []
    for _ in range(6):  # 5 steps of the episode, then the step that starts the next
        # Hold the delay at M so that nothing newer overtakes the plan.
        state, ts = env.step(state.replace(delay=jnp.full((2,), m, jnp.int32)), jnp.array([0, 0]))
        executed.append(np.asarray(ts.delay.executed))
    np.testing.assert_array_equal(np.stack(executed[:m], axis=1), plan)
    assert bool(ts.first.all()) and (np.asarray(executed[-1]) == 0).all()
    assert (np.asarray(state.queue_delays) == m).all()


def test_the_pending_view_says_which_action_executes_at_each_of_the_next_delay_steps():
    m = 6
    env = delayed(walker_env(4), m, stochastic=True, change_prob=0.3)
    state, ts = env.reset(jax.random.PRNGKey(5))
    step = jax.jit(env.step)
    actions = jax.random.randint(jax.random.PRNGKey(6), (80, 4), 0, 3)
    views, executed = [], []
    for a in actions:
        views.append(ts.delay)
        state, ts = step(state, a)
        executed.append(np.asarray(ts.delay.executed))
    executed = np.stack(executed)
    checked = 0
    for t, view in enumerate(views):
        for e in range(4):
            for ix in range(int(view.delay[e])):
                if t + ix < len(executed):
                    assert int(view.pending[e, ix]) == executed[t + ix, e]
                    checked += 1
    assert checked > 500


def test_pending_view_of_a_fresh_queue_is_the_queue_itself():
    queue = jnp.array([[4, 5, 6]])
    np.testing.assert_array_equal(pending_view(queue, jnp.full((1, 3), 3)), queue)


def test_the_forward_unroll_with_a_perfect_model_reaches_the_observation_the_action_will_meet():
    """With the toy env's exact dynamics as the model and its observation as the latent, unrolling the pending
    actions from o_t gives o_{t+d}: the state at which the action decided at t executes."""
    m = 5
    env = delayed(walker_env(8), m, stochastic=True)
    state, ts = env.reset(jax.random.PRNGKey(7))

    def exact_dynamics(obs, action):
        return jnp.stack([obs[:, 0] + action - 1, action.astype(jnp.float32)], axis=1)

    predictions, observations = [], []
    for a in jax.random.randint(jax.random.PRNGKey(8), (60, 8), 0, 3):
        predictions.append((unroll_pending(exact_dynamics, ts.obs, ts.delay.pending, ts.delay.delay)[:, 0],
                            np.asarray(ts.delay.delay)))
        observations.append(np.asarray(ts.obs[:, 0]))
        state, ts = env.step(state, a)
    for t, (predicted, delay) in enumerate(predictions):
        for e in range(8):
            if t + delay[e] < len(observations):
                assert float(predicted[e]) == observations[t + delay[e]][e]


def test_a_planned_queue_is_the_search_pick_from_each_latent_along_the_plan():
    picks = plan_queue(lambda z, key: (z % 3).astype(jnp.int32), lambda z, a: z * 2 + a, jnp.array([1, 2]),
                       jax.random.PRNGKey(0), 3)
    # z: 1 -> pick 1 -> 3 -> pick 0 -> 6 -> pick 0;  2 -> 2 -> 6 -> 0 -> 12 -> 0
    np.testing.assert_array_equal(picks, [[1, 0, 0], [2, 0, 0]])


def test_delay_settings_are_validated_before_compiling():
    spec = envs.make("CartPole-v1", 1, seed=0).spec
    for overrides, words in [({"delay": -1}, "--delay"), ({"delay_change_prob": 0.7}, "--delay-change-prob"),
                             ({"stochastic_delay": True}, "--stochastic-delay needs"),
                             ({"delay": 3, "forward": False, "delay_init": "planned"}, "--delay-init planned")]:
        with pytest.raises(ConfigError, match=words):
            validate(tiny_config("classic", **overrides), spec)


def test_a_forward_agent_stores_executed_actions_and_an_oblivious_one_its_decisions():
    from ezv.agent import CompiledAgent

    env = delayed(envs.make("CartPole-v1", 4, seed=0), 3)
    for forward in (True, False):
        agent = CompiledAgent(tiny_config("classic", delay=3, forward=forward), env)
        state = agent.init(jax.random.PRNGKey(0))
        decisions, executed = [], []
        for _ in range(6):
            state, out = agent.decide(state)
            env_state, ts = agent.step_envs(state, out.action)
            state, _ = agent.record(state, out, env_state, ts)
            decisions.append(np.asarray(out.action))
            executed.append(np.asarray(ts.delay.executed))
        stored = np.asarray(state.replay.action[:6])  # rows of the first 6 acting steps
        np.testing.assert_array_equal(stored, np.stack(executed if forward else decisions))
        if forward:
            assert not np.array_equal(np.stack(executed), np.stack(decisions))


def searches_from_the_predicted_latent(agent, state, out):
    """Whether `out` (the agent's decision) is the evaluation-free search from the latent reached through the
    pending actions (mapped to the model's action space), and not the one from the current latent."""
    from ezv.frames import stacked_obs

    model, view, variables = agent.model, state.timestep.delay, state.variables
    obs = stacked_obs(state.frames)
    key = jax.random.split(state.key)[1]  # decide's search key
    search_key, root_key = model.fns.split_root_key(key)
    latent = model.net.apply(variables, obs, method=model.net.represent)
    ahead = unroll_pending(lambda z, a: model.fns.next_latent(variables, z, a), latent, model.from_env(view.pending),
                           view.delay)
    expected = model.search_roots(variables, search_key, model.fns.root_at(variables, ahead, root_key))
    here = model.search_roots(variables, search_key, model.fns.root_at(variables, latent, root_key))
    return (np.array_equal(out.policy, expected.policy) and np.array_equal(out.value, expected.value)
            and not np.array_equal(out.value, here.value))


@pytest.mark.parametrize("env_id,preset", [("CartPole-v1", "classic"), ("Pendulum-v1", "control")])
def test_the_agent_searches_from_the_latent_its_model_predicts_after_the_pending_actions(env_id, preset):
    """Discrete and continuous (env-space actions mapped back to the policy space for the dynamics)."""
    from ezv.agent import CompiledAgent

    cfg = tiny_config(preset, delay=3, stochastic_delay=True, delay_init="random")
    env = delayed(envs.make(env_id, cfg.num_envs, seed=0), 3, stochastic=True)
    agent = CompiledAgent(cfg, env)
    state = agent.init(jax.random.PRNGKey(0))
    for _ in range(4):
        state = agent.act(state)[0]
    new_state, out = agent.decide(state)
    assert searches_from_the_predicted_latent(agent, state, out)
    box = env.spec.action_space
    if preset == "control":
        np.testing.assert_allclose(agent.model.from_env(jnp.asarray([box.low, box.high])), [[-1.0], [1.0]])


def test_an_agent_of_a_delayed_config_refuses_an_undelayed_env():
    from ezv.agent import CompiledAgent

    with pytest.raises(ValueError, match="with_delay"):
        CompiledAgent(tiny_config("classic", delay=3), envs.make("CartPole-v1", 4, seed=0))


def test_a_delayed_run_with_two_seeds_resumes_exactly_and_evaluates_at_several_delays(tmp_path, capsys):
    """Through the CLI: a stochastic delay with planned queues, 2 seeds in one program, evaluated at the run's
    delay and at --eval-delays during training, resumed bit-exactly, then evaluated at other delays."""
    import shutil

    from cli_helpers import TINY_FLAGS, read_rows, run_cli, without_timing

    from ezv import evaluate

    base = ["--env-id", "CartPole-v1", *TINY_FLAGS, "--num-seeds", "2", "--checkpoint-interval", "40",
            "--delay", "3", "--stochastic-delay", "--eval-delays", "0", "5"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run_cli([*base, "--run-dir", straight, "--total-env-steps", "120"], capsys)
    shutil.copytree(straight, resumed)
    run_cli(["--resume", resumed, "--resume-step", "80"], capsys)
    rows = read_rows(resumed)
    assert without_timing(rows) == without_timing(read_rows(straight))
    assert all(k in rows[-1] for k in ("eval_return_mean", "eval_delay0_return_mean", "eval_delay5_return_mean"))
    assert 0 <= rows[-1]["delay_mean"] <= 3
    report = evaluate.main([resumed, "--episodes", "2", "--delays", "0", "7"])
    assert set(report["delays"]) == {"0", "7"}
    assert np.isfinite(report["delays"]["7"]["seeds"]["1"]["returns"]).all()


def test_the_delay_settings_are_train_flags(capsys):
    from ezv.train import main

    with pytest.raises(SystemExit):
        main(["--env-id", "CartPole-v1", "--help"])
    text = capsys.readouterr().out
    for flag in ("--delay INT", "--stochastic-delay", "--delay-change-prob", "--no-forward", "--delay-init",
                 "--eval-delays"):
        assert flag in text


def test_an_exported_agent_plans_through_the_pending_actions_it_is_given():
    """`LoadedAgent.act(obs, key, pending=, delay=)` acts as a forward run's evaluation does at a delayed env's
    step: the env's padded view with per-env delays, or each env's d due actions alone; no pending actions is
    the undelayed policy; an oblivious agent refuses them; bad actions and delays are named."""
    import dataclasses

    from ezv.inference import LoadedAgent
    from ezv.model import EZModel

    m = 4
    env = delayed(envs.make("CartPole-v1", 6, seed=0), m, stochastic=True)
    cfg = tiny_config("classic", delay=m, stochastic_delay=True)
    model = EZModel(cfg, env.spec)
    agent = LoadedAgent(cfg, env.spec, model.init_variables(jax.random.PRNGKey(1)))
    state, ts = env.reset(jax.random.PRNGKey(2))
    for a in jax.random.randint(jax.random.PRNGKey(3), (5, 6), 0, 2):
        state, ts = env.step(state, a)
    key, view = jax.random.PRNGKey(4), ts.delay
    assert len(set(np.asarray(view.delay).tolist())) > 1  # envs under different delays in one call
    in_run = jax.jit(model.greedy_action)
    np.testing.assert_array_equal(agent.act(ts.obs, key, pending=view.pending, delay=view.delay),
                                  in_run(agent.variables, ts.obs, key, view))
    for e in range(6):
        alone = int(agent.act(ts.obs[e], key, pending=np.asarray(view.pending[e, :int(view.delay[e])])))
        assert alone == int(in_run(agent.variables, ts.obs[e:e + 1], key, jax.tree.map(lambda x: x[e:e + 1], view))[0])
    undelayed = agent.act(ts.obs, key)
    np.testing.assert_array_equal(undelayed, in_run(agent.variables, ts.obs, key, None))
    np.testing.assert_array_equal(agent.act(ts.obs, key, pending=np.zeros((6, 0), int)), undelayed)

    oblivious = LoadedAgent(dataclasses.replace(cfg, forward=False), env.spec, agent.variables)
    with pytest.raises(ValueError, match="oblivious"):
        oblivious.act(ts.obs, key, pending=view.pending)
    for pending, delay, words in [(np.zeros((5, 2), int), None, r"expected \[N, k\], the next to execute first"),
                                  (np.full((6, 2), 2), None, "integers in 0..1"),
                                  (np.full((6, 2), 1.0), None, "integers in 0..1"),
                                  (np.zeros((6, 2), int), np.full(6, 3), "delay must be")]:
        with pytest.raises(ValueError, match=words):
            agent.act(ts.obs, key, pending=pending, delay=delay)


def test_an_exported_continuous_agent_clips_pending_actions_to_the_bounds_as_the_env_executes_them():
    from ezv.inference import LoadedAgent
    from ezv.model import EZModel

    env = envs.make("Pendulum-v1", 1, seed=0)  # actions in [-2, 2]
    cfg = tiny_config("control", delay=2)
    agent = LoadedAgent(cfg, env.spec, EZModel(cfg, env.spec).init_variables(jax.random.PRNGKey(0)))
    obs, key = env.reset(jax.random.PRNGKey(1))[1].obs[0], jax.random.PRNGKey(2)
    beyond, at_bound = agent.act(obs, key, pending=[[9.0], [-0.5]]), agent.act(obs, key, pending=[[2.0], [-0.5]])
    np.testing.assert_array_equal(beyond, at_bound)
    with pytest.raises(ValueError, match="finite"):
        agent.act(obs, key, pending=[[np.nan], [0.0]])
