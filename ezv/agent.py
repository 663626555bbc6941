"""One seed's agent as pure functions of its `TrainState`: act, store, learn, evaluate.

    agent = CompiledAgent(cfg, env, eval_env)
    state = agent.init(key)
    state, metrics = agent.chunk(state, start)        # scan of `iteration` (compiled by `Program`)
    result = agent.evaluate_episodes(params, batch_stats, key)  # one greedy episode per eval env

`iteration(state, index) -> (state, metrics)` does, on device: act (search with the online network,
step every env, write one replay row per env), then, once `learning_starts` env steps are
collected and on the iterations the replay ratio asks for, `updates_per_iteration` learner
updates (`ezv.learner`). The network and its search are `ezv.model.EZModel`; how seeds, devices
and a shared envpool pool are laid out is `ezv.program`'s business.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from ezv import replay as replay_lib
from ezv.acting import ActingRule
from ezv.config import Config
from ezv.envs import TimeStep, VecEnv
from ezv.frames import init_frames, push_frame, stacked_obs
from ezv.learner import Learner
from ezv.model import EZModel
from ezv.search import SearchOutput
from ezv.state import TrainState

Metrics = dict[str, jax.Array]


class Phases(Protocol):
    """The phases of a training iteration over some state layout: one seed's `TrainState`
    (`CompiledAgent`), or several seeds sharing one envpool pool (`ezv.program.SharedPool`)."""

    cfg: Config

    def decide(self, state: Any) -> tuple[Any, SearchOutput]: ...
    def step_envs(self, state: Any, action: jax.Array) -> tuple[Any, TimeStep]: ...
    def record(self, state: Any, out: SearchOutput, env_state: Any, ts: TimeStep) -> tuple[Any, Metrics]: ...
    def learn(self, state: Any) -> tuple[Any, Metrics]: ...


def iteration(phases: Phases, state: Any, index: jax.Array) -> tuple[Any, Metrics]:
    """Act once (search, step every env, store the transitions), then learn if this is a learning
    iteration. `index` is the acting step this iteration takes (= the state's `iteration`). It
    comes from outside the state so that, when seeds are vmapped, the learn/skip decision stays
    one unbatched `cond` and not a `select` that would run the learner on every iteration."""
    state, out = phases.decide(state)
    env_state, ts = phases.step_envs(state, out.action)
    state, act_metrics = phases.record(state, out, env_state, ts)
    state, learn_metrics = maybe_learn(phases.cfg, state, index, phases.learn)
    return state, {**act_metrics, **learn_metrics}


def chunk(phases: Phases, state: Any, start: jax.Array) -> tuple[Any, Metrics]:
    """`iterations_per_chunk` iterations from acting step `start`; metrics stacked over iterations."""
    indices = start + jnp.arange(phases.cfg.iterations_per_chunk, dtype=jnp.int32)
    return jax.lax.scan(lambda s, i: iteration(phases, s, i), state, indices)


def maybe_learn(cfg: Config, state: Any, index: jax.Array, learn: Callable) -> tuple[Any, Metrics]:
    """`learn(state)` on the iterations the replay ratio asks for once `learning_starts` env
    steps are collected (env steps count every env of the run), zeros of its metrics otherwise."""
    done = index + 1  # acting steps taken after this iteration's
    learning = (done * cfg.num_envs >= cfg.learning_starts) & (done % cfg.learn_every == 0)
    # One trace of the learner, not two: the skip branch needs the shapes of its metrics, and a jitted
    # `learn` keeps the trace `eval_shape` makes for the `cond` to reuse (half the chunk's tracing time).
    learn = jax.jit(learn)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(learn, state)[1])
    state, metrics = jax.lax.cond(learning, learn, lambda s: (s, zeros), state)
    learning = jnp.broadcast_to(learning.astype(jnp.float32), jax.tree.leaves(zeros)[0].shape)
    return state, {**metrics, "learning": learning}


class CompiledAgent:
    """Static parts of one seed's run (config, model, learner, env functions) and its pure functions."""

    def __init__(
        self,
        cfg: Config,
        env: VecEnv,
        eval_env: VecEnv | None = None,
        *,
        envs_per_state: int | None = None,
        num_devices: int = 1,
        axis_name: str | None = None,
        seed_axis: str | None = None,
    ):
        """`env` steps this state's envs, or a pool of which this state owns `envs_per_state`
        (an envpool pool shared by several seeds, see `ezv.program`). With `num_devices` > 1 this
        is one device's part of a data-parallel run: `env` holds that device's envs, the learner
        takes batch_size / num_devices windows from the device's own replay, and gradients and
        normalisation statistics are averaged over the mesh axis `axis_name`. `seed_axis`: the vmap axis
        of the seeds when several are vmapped (the planned queue of a delayed env is made when an episode
        of any seed starts, so that it stays one `cond`)."""
        self.cfg = cfg
        self.env = env
        self.eval_env = eval_env
        self.envs_per_state = env.num_envs if envs_per_state is None else envs_per_state
        self.num_devices = num_devices
        self.model = EZModel(cfg, env.spec)
        self.acting = ActingRule(cfg, self.model.action_shape, self.model.num_actions)
        self.learner = Learner(cfg, self.model, batch_size=cfg.learner.batch_size // num_devices, axis_name=axis_name)
        self.rows_per_env = cfg.replay.capacity // cfg.num_envs  # the capacity counts every env of the run
        # Execution delay (`ezv.envs.delay`, `ezv.forward`): static switches, so an undelayed run traces as before.
        self.delayed = cfg.delay > 0
        self.forward = self.delayed and cfg.forward
        self.planned = self.delayed and cfg.plans_queue
        self.seed_axis = seed_axis
        if self.delayed and getattr(env, "max_delay", None) != cfg.delay:
            raise ValueError(f"the config has --delay {cfg.delay} but the env is not delayed by it: wrap it with "
                             "ezv.program.with_delay(cfg, env, cfg.delay).")

    # --- init -----------------------------------------------------------------------------

    def init(self, key: jax.Array, shard: jax.Array | int = 0) -> TrainState:
        """A fresh run's state. `shard` is the device index of a data-parallel run: every device
        starts from the same networks (they come from `key` alone) with its own envs and rng."""
        env_key = jax.random.split(key, 3)[1]
        if self.num_devices > 1:
            env_key = jax.random.fold_in(env_key, shard)
        env_state, ts = self.env.reset(env_key)
        return self.init_with_env(key, env_state, ts, shard)

    def init_with_env(self, key: jax.Array, env_state: Any, ts: TimeStep, shard: jax.Array | int = 0) -> TrainState:
        """`init` around envs that are already reset (an env shared by several seeds' states)."""
        net_key, _, state_key = jax.random.split(key, 3)
        if self.num_devices > 1:
            state_key = jax.random.fold_in(state_key, shard)
        variables = self.model.init_variables(net_key)
        params, batch_stats = variables["params"], variables["batch_stats"]
        spec = self.env.spec
        state = TrainState(
            params=params,
            batch_stats=batch_stats,
            target_params=params,
            target_batch_stats=batch_stats,
            opt_state=self.learner.optimizer.init(params),
            replay=replay_lib.init(
                self.rows_per_env, self.envs_per_state, spec.obs_shape, spec.obs_dtype,
                self.model.action_shape, self.model.action_dtype,
                policy_size=self.model.num_actions if self.learner.reuses_stored_policies else 0,
            ),
            env_state=env_state,
            timestep=ts,
            frames=jnp.asarray(init_frames(ts.obs, self.model.frame_stack)),
            key=state_key,
            iteration=jnp.int32(0),
            updates=jnp.int32(0),
        )
        # The state is donated to the compiled chunk leaf by leaf, so no two leaves may share a
        # buffer (the target starts as the online network; env resets reuse zero arrays).
        return jax.tree.map(jnp.copy, state)

    def restart_envs(self, state: TrainState, key: jax.Array) -> TrainState:
        """Start every env on a fresh episode (a resumed run whose env state lives outside JAX)."""
        env_state, ts = self.env.reset(key)
        return self.adopt_envs(state, env_state, ts)

    def adopt_envs(self, state: TrainState, env_state: Any, ts: TimeStep) -> TrainState:
        """Continue with envs on fresh episodes. The newest stored row becomes its episode's final
        observation (a truncation: targets bootstrap from it), so no transition links it to the
        new episode."""
        newest = (state.replay.cursor - 1) % state.replay.rows
        written = state.replay.step[newest] >= 0
        replay = state.replay.replace(
            last=state.replay.last.at[newest].set(state.replay.last[newest] | written),
            priority=state.replay.priority.at[newest].set(jnp.where(written, 0.0, state.replay.priority[newest])),
        )
        frames = init_frames(ts.obs, state.frames.shape[1]).astype(state.frames.dtype)
        return state.replace(env_state=env_state, timestep=ts, frames=frames, replay=replay)

    # --- act ------------------------------------------------------------------------------

    def decide(self, state: TrainState) -> tuple[TrainState, SearchOutput]:
        """Search from the current observations with the online network, and the actions to execute
        (the search's own, or as `cfg.acting` draws them: `ezv.acting`)."""
        key, search_key = jax.random.split(state.key)
        obs = stacked_obs(state.frames)
        if self.planned:
            key, plan_key = jax.random.split(key)
            state = state.replace(timestep=self.plan_new_queues(state.variables, plan_key, obs, state.timestep))
        out = self.model.search(state.variables, search_key, obs, delay=state.timestep.delay if self.forward else None)
        if self.acting.active:  # draws only where the acting settings ask for it (EZ-V2 needs none)
            key, acting_key = jax.random.split(key)
            out = self.acting.apply(acting_key, out, state.iteration, state.updates)
        return state.replace(key=key), out

    def plan_new_queues(self, variables: Any, key: jax.Array, obs: jax.Array, ts: TimeStep) -> TimeStep:
        """The envs starting an episode get a planned queue (`EZModel.plan_queue`) in place of their
        random one: written into the agent's view now, into the envs' queues when they step (`step_envs`).
        Planning runs only on the steps where some env (of any vmapped seed) starts an episode."""
        starting = jnp.any(ts.first)
        if self.seed_axis is not None:
            starting = jax.lax.psum(starting.astype(jnp.int32), self.seed_axis) > 0
        view = ts.delay
        plan = jax.lax.cond(starting, lambda: self.model.plan_queue(variables, key, obs, self.cfg.delay),
                            lambda: view.pending)
        first = ts.first.reshape((-1,) + (1,) * (plan.ndim - 1))
        return ts.replace(delay=view.replace(pending=jnp.where(first, plan, view.pending)))

    def commit_planned_queues(self, env: Any, env_state: Any, ts: TimeStep) -> Any:
        """Put the plans `plan_new_queues` made into the queues of the envs starting an episode."""
        return env.with_queue(env_state, ts.delay.pending, ts.first) if self.planned else env_state

    def record(self, state: TrainState, out: SearchOutput, env_state: Any, ts: TimeStep) -> tuple[TrainState, Metrics]:
        """Write the transition that `out.action` led to (one replay row per env) and move on. A forward-planning
        agent on a delayed env stores the action the env executed (the model learns the undelayed MDP)."""
        prev = state.timestep
        replay = replay_lib.add(
            state.replay,
            state.iteration,
            obs=prev.obs,
            action=self.model.from_env(ts.delay.executed) if self.forward else out.action,
            reward=ts.reward,
            first=prev.first,
            last=prev.last,
            terminal=prev.terminated,
            policy=out.policy,
        )
        metrics = {
            "episode_return_sum": jnp.sum(ts.episode_return),
            "episode_length_sum": jnp.sum(ts.episode_length).astype(jnp.float32),
            "episodes": jnp.sum(ts.episode_done).astype(jnp.float32),
            "search_value": jnp.mean(out.value),
            "network_value": jnp.mean(out.raw_value),
        }
        if self.delayed:
            metrics["delay"] = jnp.mean(prev.delay.delay.astype(jnp.float32))  # the recorded decisions' delay
        new_state = state.replace(
            env_state=env_state,
            timestep=ts,
            frames=push_frame(state.frames, ts),
            replay=replay,
            iteration=state.iteration + 1,
        )
        return new_state, metrics

    def step_envs(self, state: TrainState, action: jax.Array) -> tuple[Any, TimeStep]:
        """Every env takes its action (the search's; mapped to the env's action space)."""
        env_state = self.commit_planned_queues(self.env, state.env_state, state.timestep)
        return self.env.step(env_state, self.model.to_env(action))

    def act(self, state: TrainState) -> tuple[TrainState, Metrics]:
        """Search, step every env, store the transitions."""
        state, out = self.decide(state)
        env_state, ts = self.step_envs(state, out.action)
        return self.record(state, out, env_state, ts)

    # --- learn ----------------------------------------------------------------------------

    def learn(self, state: TrainState) -> tuple[TrainState, Metrics]:
        """One iteration's learner updates. Metrics per update ([count]): a divergence is reported
        at the exact update."""
        return self.learner.learn_group(state, self.cfg.updates_per_iteration)

    # --- the scanned program --------------------------------------------------------------

    def chunk(self, state: TrainState, start: jax.Array) -> tuple[TrainState, Metrics]:
        return chunk(self, state, start)

    def offline(self, state: TrainState, count: int) -> tuple[TrainState, Metrics]:
        """`count` learner updates without acting (the offline phase after collection)."""
        return self.learner.offline(state, count)

    # --- evaluation -----------------------------------------------------------------------

    def evaluate_episodes(
        self, params: Any, batch_stats: Any, key: jax.Array, max_steps: jax.Array | int | None = None,
        env: VecEnv | None = None,
    ) -> dict[str, jax.Array]:
        """One greedy episode per eval env (`greedy_episodes` with this agent's model and its eval env, or
        `env`: the same episodes at another execution delay), planning through delays as the run acts."""
        env = self.eval_env if env is None else env
        if env is None:
            raise ValueError("this CompiledAgent was built without an evaluation env")
        return greedy_episodes(self.model, env, params, batch_stats, key, max_steps, forward=self.cfg.forward,
                               planned_queue=self.cfg.plans_queue)


def greedy_episodes(
    model: EZModel, env: VecEnv, params: Any, batch_stats: Any, key: jax.Array,
    max_steps: jax.Array | int | None = None, *, forward: bool = False, planned_queue: bool = False,
) -> dict[str, jax.Array]:
    """One episode per env with the greedy search (`EZModel.greedy_action`) under the env's protocol
    (an evaluation env: Atari raw rewards, no episodic life, 27k-step cap). `max_steps` (traced, so
    one compiled program serves every cap): stop every episode after this many agent steps, as the
    references' periodic tests do; None: the env's own cap. Returns per env {"returns", "lengths",
    "finished", "capped"}: an episode stopped by `max_steps` is `capped`, with its score so far.
    A delayed env (`ezv.envs.delay`): with `forward`, each search plans through the pending actions;
    with `planned_queue`, the episodes start from the model's planned queue (noise-free searches)."""
    n = env.num_envs
    variables = {"params": params, "batch_stats": batch_stats}
    env_key, key = jax.random.split(key)
    env_state, ts = env.reset(env_key)
    delayed = getattr(env, "max_delay", 0) > 0
    forward = forward and delayed
    if planned_queue and delayed:  # every episode starts now; those after the first are not scored
        key, plan_key = jax.random.split(key)
        env_state, ts = start_from_planned_queues(model, env, variables, plan_key, env_state, ts)
    cap = env.spec.max_episode_steps + 2
    limit = jnp.int32(cap) if max_steps is None else jnp.minimum(jnp.asarray(max_steps, jnp.int32), cap)

    def cond(carry):
        _, _, _, done, _, _, _, t, _ = carry
        return (~jnp.all(done)) & (t < limit)

    def body(carry):
        env_state, ts, frames, done, returns, lengths, partial, t, key = carry
        key, search_key = jax.random.split(key)
        action = model.greedy_action(variables, stacked_obs(frames), search_key, delay=ts.delay if forward else None)
        env_state, ts = env.step(env_state, action)
        new = ts.episode_done & ~done
        returns = jnp.where(new, ts.episode_return, returns)
        lengths = jnp.where(new, ts.episode_length, lengths)
        partial = partial + jnp.where(done, 0.0, ts.reward)
        return env_state, ts, push_frame(frames, ts), done | new, returns, lengths, partial, t + 1, key

    zeros = jnp.zeros((n,), jnp.float32)
    init = (env_state, ts, jnp.asarray(init_frames(ts.obs, model.frame_stack)), jnp.zeros((n,), bool), zeros,
            jnp.zeros((n,), jnp.int32), zeros, jnp.int32(0), key)
    _, _, _, done, returns, lengths, partial, t, _ = jax.lax.while_loop(cond, body, init)
    capped = ~done & (t < cap)
    return {"returns": jnp.where(capped, partial, returns), "lengths": jnp.where(capped, t, lengths),
            "finished": done, "capped": capped}


def start_from_planned_queues(
    model: EZModel, env: VecEnv, variables: Any, key: jax.Array, env_state: Any, ts: TimeStep
) -> tuple[Any, TimeStep]:
    """Freshly reset evaluation envs with the model's planned queues (noise-free searches) in place of their
    random ones, in the envs and in the agent's view; an undelayed env as it is."""
    if getattr(env, "max_delay", 0) == 0:
        return env_state, ts
    obs = stacked_obs(init_frames(ts.obs, model.frame_stack))
    plan = model.plan_queue(variables, key, obs, env.max_delay, evaluation=True)
    return env.with_queue(env_state, plan, ts.first), ts.replace(delay=ts.delay.replace(pending=plan))
