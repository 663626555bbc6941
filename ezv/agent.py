"""EfficientZero V2 as one compiled program: init, act, learn, the scanned chunk, and evaluation.

    agent = Agent(cfg, env, eval_env)
    state = agent.init(key)
    state, metrics = agent.train_chunk(state)    # jit(scan(iteration)), state donated
    result = agent.evaluate(state.params, state.batch_stats, key)

`iteration(state) -> (state, metrics)` does, on device: act (search with the online network,
step every env, write one replay row per env), then, once `learning_starts` env steps are
collected and on the iterations the replay ratio asks for, `updates_per_iteration` learner
updates, each with a full reanalysis of its sampled windows by the target network.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ezv import augment, gaussian, replay as replay_lib, targets as targets_lib
from ezv.config import Config
from ezv.envs import Discrete, TimeStep, VecEnv
from ezv.losses import Targets, Unroll, ez_loss
from ezv.networks import EZNet, torch_default_init
from ezv.search import ContinuousModelFns, ModelFns, SearchOutput, gumbel_search, sampled_gumbel_search


@struct.dataclass
class TrainState:
    params: Any
    batch_stats: Any  # BatchNorm running averages and the observation RunningNorm
    target_params: Any
    target_batch_stats: Any
    opt_state: Any
    replay: replay_lib.Replay
    env_state: Any
    timestep: TimeStep  # the current observation and its episode flags
    frames: jax.Array  # [E, S, *obs_shape] the last S observations (oldest first)
    key: jax.Array
    iteration: jax.Array  # int32, acting steps taken (env steps = iteration * num_envs)
    updates: jax.Array  # int32, learner updates applied


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Global-norm clip, coupled L2 weight decay, then SGD+momentum or Adam, with the reference's
    schedule: linear warm-up over `warmup_fraction` of all updates, then x`lr_decay_rate` every
    `lr_decay_updates` updates (reference §5)."""
    L = cfg.learner
    warmup = int(L.warmup_fraction * cfg.total_updates)
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, L.learning_rate, max(warmup, 1)),
            optax.exponential_decay(L.learning_rate, L.lr_decay_updates, L.lr_decay_rate, staircase=True),
        ],
        [warmup],
    )
    if L.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=L.momentum)
    else:
        opt = optax.adam(schedule)
    parts = [optax.clip_by_global_norm(L.max_grad_norm)]
    if L.weight_decay:
        parts.append(optax.add_decayed_weights(L.weight_decay))
    return optax.chain(*parts, opt)


def _stack_obs(frames: jax.Array, frame_stack: int) -> jax.Array:
    return replay_lib.stack_frames(frames) if frame_stack > 1 else frames[:, 0]


def _push_frame(frames: jax.Array, ts: TimeStep) -> jax.Array:
    """Append the new observation; a new episode's stack is its first frame repeated."""
    shifted = jnp.concatenate([frames[:, 1:], ts.obs[:, None]], axis=1)
    repeated = jnp.broadcast_to(ts.obs[:, None], frames.shape)
    mask = ts.first.reshape((-1,) + (1,) * (frames.ndim - 1))
    return jnp.where(mask, repeated, shifted)


class Agent:
    """Static parts of a run (config, networks, env functions) and its pure functions."""

    def __init__(
        self,
        cfg: Config,
        env: VecEnv,
        eval_env: VecEnv | None = None,
        *,
        seeds_sharing_env: int = 1,
        num_devices: int = 1,
        axis_name: str | None = None,
    ):
        """`env` steps this state's envs, or the envs of `seeds_sharing_env` states at once (an
        envpool pool split by seed, see `ezv.program`). With `num_devices` > 1 this is one
        device's part of a data-parallel run: `env` holds that device's envs, the learner takes
        batch_size / num_devices windows from the device's own replay, and gradients and
        normalisation statistics are averaged over the mesh axis `axis_name`."""
        self.cfg = cfg
        self.env = env
        self.eval_env = eval_env
        self.spec = env.spec
        self.num_envs = env.num_envs // seeds_sharing_env
        self.num_devices = num_devices
        self.axis_name = axis_name
        self.batch_size = cfg.learner.batch_size // num_devices
        self.frame_stack = env.spec.frame_stack
        space = env.spec.action_space
        self.continuous = not isinstance(space, Discrete)
        # The tree-wide Q normalisation reads each node's path from its embedding (no tree walks).
        num_actions = None if self.continuous else space.n
        path_depth = cfg.search.simulations_for(num_actions) if cfg.search.q_normalisation == "tree" else 0
        if self.continuous:
            self.num_actions, self.action_dim = None, space.dim
            self.action_shape, self.action_dtype = (space.dim,), jnp.float32
            self.net = EZNet(cfg.network, num_actions=None, action_dim=space.dim)
            self.model = ContinuousModelFns(self.net, cfg.network, cfg.learner.discount, cfg.search, path_depth)
            self.considered = cfg.search.num_sampled_actions
            kind = cfg.learner.continuous_policy_loss
            self.continuous_loss = ("full" if space.dim == 1 else "simple") if kind == "auto" else kind
        else:
            self.num_actions, self.action_dim = space.n, None
            self.action_shape, self.action_dtype = (), jnp.int32
            self.net = EZNet(cfg.network, num_actions=space.n)
            self.model = ModelFns(self.net, cfg.network, cfg.learner.discount, path_depth)
            self.considered = cfg.search.considered_for(space.n)
            self.continuous_loss = None
        self.optimizer = make_optimizer(cfg)
        self.num_simulations = cfg.search.simulations_for(self.num_actions)
        self.rows_per_env = cfg.replay.capacity // cfg.num_envs  # the capacity counts every env of the run
        self.window = cfg.learner.unroll_steps + cfg.learner.td_steps + 1
        self.augment = cfg.learner.augment and env.spec.is_image
        self.train_chunk = jax.jit(self._train_chunk, donate_argnums=0)
        self.offline_chunk = jax.jit(self._offline_chunk, static_argnums=1, donate_argnums=0)
        self.evaluate = jax.jit(self._evaluate)

    # --- shapes ---------------------------------------------------------------------------

    @property
    def stacked_obs_shape(self) -> tuple[int, ...]:
        shape = self.spec.obs_shape
        if self.frame_stack == 1:
            return shape
        return shape[:-1] + (shape[-1] * self.frame_stack,)

    # --- init -----------------------------------------------------------------------------

    def init(self, key: jax.Array, shard: jax.Array | int = 0) -> TrainState:
        """A fresh run's state. `shard` is the device index of a data-parallel run: every device
        starts from the same networks (they come from `key` alone) with its own envs and rng."""
        env_key = jax.random.split(key, 3)[1]
        if self.num_devices > 1:
            env_key = jax.random.fold_in(env_key, shard)
        env_state, ts = self.env.reset(env_key)
        return self.init_with_env(key, env_state, ts, shard)

    def init_networks(self, key: jax.Array) -> dict[str, Any]:
        """Fresh {"params", "batch_stats"} of the networks alone."""
        obs = jnp.zeros((1,) + self.stacked_obs_shape, self.spec.obs_dtype)
        variables = self.net.init(key, obs, jnp.zeros((1,) + self.action_shape, self.action_dtype))
        params = variables["params"]
        if self.cfg.network.init == "torch":
            params = torch_default_init(params, jax.random.fold_in(key, 1))
        return {"params": params, "batch_stats": variables.get("batch_stats", {})}

    def init_with_env(self, key: jax.Array, env_state: Any, ts: TimeStep, shard: jax.Array | int = 0) -> TrainState:
        """`init` around envs that are already reset (an env shared by several seeds' states)."""
        net_key, _, state_key = jax.random.split(key, 3)
        if self.num_devices > 1:
            state_key = jax.random.fold_in(state_key, shard)
        variables = self.init_networks(net_key)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        frames = jnp.broadcast_to(ts.obs[:, None], (self.num_envs, self.frame_stack) + ts.obs.shape[1:])
        state = TrainState(
            params=params,
            batch_stats=batch_stats,
            target_params=params,
            target_batch_stats=batch_stats,
            opt_state=self.optimizer.init(params),
            replay=replay_lib.init(
                self.rows_per_env, self.num_envs, self.spec.obs_shape, self.spec.obs_dtype,
                self.action_shape, self.action_dtype,
            ),
            env_state=env_state,
            timestep=ts,
            frames=jnp.asarray(frames),
            key=state_key,
            iteration=jnp.int32(0),
            updates=jnp.int32(0),
        )
        # The state is donated to the compiled chunk leaf by leaf, so no two leaves may share a
        # buffer (the target starts as the online network; env resets reuse zero arrays).
        return jax.tree.map(jnp.copy, state)

    def restart_envs(self, state: TrainState, key: jax.Array) -> TrainState:
        """Start every env on a fresh episode (a resumed run whose env state lives outside JAX).
        The newest stored row becomes its episode's final observation (a truncation: targets
        bootstrap from it), so no transition links it to the new episode."""
        env_state, ts = self.env.reset(key)
        return self.adopt_envs(state, env_state, ts)

    def adopt_envs(self, state: TrainState, env_state: Any, ts: TimeStep) -> TrainState:
        newest = (state.replay.cursor - 1) % state.replay.rows
        written = state.replay.step[newest] >= 0
        replay = state.replay.replace(
            last=state.replay.last.at[newest].set(state.replay.last[newest] | written),
            priority=state.replay.priority.at[newest].set(jnp.where(written, 0.0, state.replay.priority[newest])),
        )
        frames = jnp.broadcast_to(ts.obs[:, None], state.frames.shape).astype(state.frames.dtype)
        return state.replace(env_state=env_state, timestep=ts, frames=frames, replay=replay)

    # --- search ---------------------------------------------------------------------------

    def search(
        self, variables: Any, key: jax.Array, obs: jax.Array, gumbel_scale: float, evaluation: bool = False
    ) -> SearchOutput:
        """Search from observations with the given network variables. `evaluation` draws every
        continuous candidate from π (no widened samples)."""
        if self.continuous:
            key, root_key = jax.random.split(key)
            root = self.model.root(variables, obs, root_key, widen=not evaluation)
        else:
            root = self.model.root(variables, obs)
        return self.search_roots(variables, key, root, gumbel_scale)

    def search_roots(self, variables: Any, key: jax.Array, root: Any, gumbel_scale: float) -> SearchOutput:
        if self.continuous:
            return sampled_gumbel_search(
                variables, key, root, self.model.recurrent_fn, cfg=self.cfg.search,
                num_simulations=self.num_simulations, gumbel_scale=gumbel_scale,
            )
        return gumbel_search(
            variables,
            key,
            root,
            self.model.recurrent_fn,
            cfg=self.cfg.search,
            num_simulations=self.num_simulations,
            max_considered_actions=self.considered,
            gumbel_scale=gumbel_scale,
        )

    def env_action(self, action: jax.Array) -> jax.Array:
        """The search's action as the env takes it (continuous: policy space [-1, 1] -> the env's box)."""
        if not self.continuous:
            return action
        space = self.spec.action_space
        return gaussian.to_env(action, space.low, space.high)

    # --- act ------------------------------------------------------------------------------

    def decide(self, state: TrainState) -> tuple[TrainState, SearchOutput]:
        """Search from the current observations with the online network (acting settings)."""
        key, search_key = jax.random.split(state.key)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        obs = _stack_obs(state.frames, self.frame_stack)
        out = self.search(variables, search_key, obs, self.cfg.search.gumbel_scale)
        return state.replace(key=key), out

    def record(
        self, state: TrainState, out: SearchOutput, env_state: Any, ts: TimeStep
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Write the transition that `out.action` led to (one replay row per env) and move on."""
        prev = state.timestep
        replay = replay_lib.add(
            state.replay,
            state.iteration,
            obs=prev.obs,
            action=out.action,
            reward=ts.reward,
            first=prev.first,
            last=prev.last,
            terminal=prev.terminated,
        )
        metrics = {
            "episode_return_sum": jnp.sum(ts.episode_return),
            "episode_length_sum": jnp.sum(ts.episode_length).astype(jnp.float32),
            "episodes": jnp.sum(ts.episode_done).astype(jnp.float32),
            "search_value": jnp.mean(out.value),
            "network_value": jnp.mean(out.raw_value),
        }
        new_state = state.replace(
            env_state=env_state,
            timestep=ts,
            frames=_push_frame(state.frames, ts),
            replay=replay,
            iteration=state.iteration + 1,
        )
        return new_state, metrics

    def act(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """Search, step every env, store the transitions."""
        state, out = self.decide(state)
        env_state, ts = self.env.step(state.env_state, self.env_action(out.action))
        return self.record(state, out, env_state, ts)

    # --- learn ----------------------------------------------------------------------------

    def sample_batch(self, replay: replay_lib.Replay, key: jax.Array) -> tuple[jax.Array, jax.Array, replay_lib.Window]:
        """Prioritised start rows, their importance weights and windows of unroll + td + 1 positions."""
        R, B = self.cfg.replay, self.batch_size
        # A start row needs its whole window written: position K + n must exist.
        min_age = self.window - 1
        idx, weights = replay_lib.sample(replay, key, B, R.alpha, R.beta, R.min_weight, min_age)
        return idx, weights, replay_lib.gather(replay, idx, self.window, self.frame_stack)

    def reanalysis_search(self, state: TrainState, w: replay_lib.Window, key: jax.Array) -> tuple[jax.Array, SearchOutput]:
        """The target network's view of a batch of windows (reference §4): it encodes every window
        position once, and one batched search runs over all B*(K+1) unroll positions.

        Returns (decoded values of every position [B, P], the search over the unroll positions).
        """
        L = self.cfg.learner
        K, B, P = L.unroll_steps, w.reward.shape[0], self.window
        variables = {"params": state.target_params, "batch_stats": state.target_batch_stats}
        latents = self.net.apply(variables, w.obs.reshape((B * P,) + w.obs.shape[2:]), method=EZNet.represent)
        logits, value_logits = self.net.apply(variables, latents, method=EZNet.predict)
        values = self.model.decode_value(value_logits)

        def unroll_positions(x):  # [B*P, ...] -> [B*(K+1), ...]
            return x.reshape((B, P) + x.shape[1:])[:, : K + 1].reshape((B * (K + 1),) + x.shape[1:])

        roots = (unroll_positions(latents), unroll_positions(logits), unroll_positions(values))
        if self.continuous:
            key, root_key = jax.random.split(key)
            root = self.model.root_from_outputs(*roots, key=root_key, widen=True)
        else:
            root = self.model.root_from_outputs(*roots)
        search = self.search_roots(variables, key, root, self.cfg.search.gumbel_scale)
        return values.reshape(B, P), search.replace(tree=None)

    def build_targets(
        self, state: TrainState, w: replay_lib.Window, values: jax.Array, search: SearchOutput
    ) -> tuple[Targets, jax.Array]:
        """Value, reward and policy targets from the reanalysis (reference §4). Returns (targets
        without the projection targets, which the online network computes in the loss;
        per-sample TD choice [B])."""
        cfg, L = self.cfg, self.cfg.learner
        K, n, B = L.unroll_steps, L.td_steps, w.reward.shape[0]
        mask = targets_lib.unroll_mask(w, K)
        terminal = w.terminal[:, : K + 1]
        td = targets_lib.n_step_returns(w, values, K, n, L.discount)
        if L.value_target == "mixed":
            use_td = targets_lib.use_td_target(
                w.step, state.iteration, state.updates, cfg.num_envs, L.mixed_start_updates, L.mixed_recent_env_steps
            )
        else:
            use_td = jnp.full((B,), L.value_target == "td")
        tgt = Targets(
            value=targets_lib.mixed_value_target(use_td, td, search.value.reshape(B, K + 1), terminal),
            reward=targets_lib.reward_targets(w, K, cfg.network.value_prefix, cfg.network.lstm_horizon),
            policy=search.policy.reshape(B, K + 1, -1),
            projection=jnp.zeros((B,)),  # a placeholder per sample: the loss computes the real ones
            mask=mask,
            policy_mask=mask & ~terminal,
        )
        if self.continuous:
            tgt = tgt.replace(
                candidates=search.candidates.reshape((B, K + 1) + search.candidates.shape[1:]),
                chosen=search.action.reshape(B, K + 1, -1),
            )
        return tgt, use_td

    def reanalyse(self, state: TrainState, w: replay_lib.Window, key: jax.Array) -> tuple[Targets, jax.Array]:
        """Targets of a batch of windows from the target network: `reanalysis_search`, then
        `build_targets`."""
        values, search = self.reanalysis_search(state, w, key)
        return self.build_targets(state, w, values, search)

    def gradient_step(
        self, state: TrainState, w: replay_lib.Window, tgt: Targets, weights: jax.Array, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
        """One optimiser step on the EZ-V2 loss. Returns (state, loss metrics, decoded v̂(s_0) [B])."""
        L, K = self.cfg.learner, self.cfg.learner.unroll_steps
        obs0 = w.obs[:, 0]
        next_obs = w.obs[:, 1 : K + 1]
        key, entropy_key = jax.random.split(key)
        if self.augment:
            # The input and the consistency targets get independent draws; the K target stacks of
            # one sample share one shift and intensity (the reference augments them as one tensor).
            k0, k1 = jax.random.split(key)
            obs0 = augment.augment(k0, obs0)
            by_sample = jnp.moveaxis(next_obs, 1, -2)  # [B, H, W, K, C*S]
            merged = by_sample.reshape(by_sample.shape[:-2] + (-1,))
            augmented = augment.augment(k1, merged).reshape(by_sample.shape)
            next_obs = jnp.moveaxis(augmented, -2, 1)
        actions = w.action[:, :K]

        def loss_fn(params):
            (policy, value, reward, projection, projection_target), updated = self.net.apply(
                {"params": params, "batch_stats": state.batch_stats},
                obs0,
                actions,
                next_obs,
                train=True,
                method=EZNet.unroll,
                mutable=["batch_stats"],
            )
            out = Unroll(policy_logits=policy, value_logits=value, reward_logits=reward, projection=projection)
            loss, metrics = ez_loss(
                out,
                tgt.replace(projection=projection_target),
                weights,
                L,
                self.model.value_support,
                self.model.reward_support,
                continuous_loss=self.continuous_loss,
                entropy_key=entropy_key,
            )
            return loss, (metrics, updated["batch_stats"], value[:, 0])

        (_, (metrics, batch_stats, value0_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if self.axis_name is not None:
            # Data parallel: every device applies the mean gradient of the global batch, and keeps
            # the same normalisation statistics, so the replicas stay identical.
            grads = jax.lax.pmean(grads, self.axis_name)
            batch_stats = jax.lax.pmean(batch_stats, self.axis_name)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        state = state.replace(
            params=optax.apply_updates(state.params, updates), batch_stats=batch_stats, opt_state=opt_state
        )
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return state, metrics, self.model.decode_value(value0_logits)

    def learn(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """One learner update: sample, reanalyse with the target network, gradient step, priorities."""
        state, metrics = self.learn_group(state, 1)
        return state, jax.tree.map(lambda x: x[0], metrics)

    def learn_group(self, state: TrainState, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """`count` learner updates whose batches are sampled and reanalysed together.

        The `count` batches are drawn from the replay as it stands at the start of the group, and
        their reanalysis is one search over count x B x (K+1) roots with the target network (a
        refresh that falls inside the group takes effect from the next group). Then `count`
        gradient steps run in sequence, each writing its batch's priorities. Against one
        sample-reanalyse-step per update this only delays priorities and target refreshes by at
        most count - 1 updates (the reference's asynchronous workers are staler), and it turns
        `count` searches into one `count` times larger: the same FLOPs, far fewer kernel launches
        on a GPU. Returns per-update metrics [count].
        """
        cfg, B = self.cfg, self.batch_size
        key, sample_key, search_key, step_key = jax.random.split(state.key, 4)
        idx, weights, w = jax.vmap(self.sample_batch, in_axes=(None, 0))(
            state.replay, jax.random.split(sample_key, count))
        flat = jax.tree.map(lambda x: x.reshape((count * B,) + x.shape[2:]), w)
        values, search = self.reanalysis_search(state, flat, search_key)
        tgt, use_td = self.build_targets(state, flat, values, search)
        tgt, use_td = jax.tree.map(lambda x: x.reshape((count, B) + x.shape[1:]), (tgt, use_td))

        def update(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
            w, tgt, weights, idx, use_td, key = batch
            state, metrics, value0 = self.gradient_step(state, w, tgt, weights, key)
            priorities = jnp.abs(value0 - tgt.value[:, 0]) + cfg.replay.priority_eps
            n_updates = state.updates + 1
            refresh = n_updates % cfg.learner.target_update_interval == 0
            pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(refresh, a, b), new, old)  # noqa: E731
            metrics = dict(
                metrics,
                td_fraction=jnp.mean(use_td.astype(jnp.float32)),
                target_value=jnp.mean(tgt.value[:, 0]),
                importance_weight=jnp.mean(weights),
            )
            state = state.replace(
                target_params=pick(state.params, state.target_params),
                target_batch_stats=pick(state.batch_stats, state.target_batch_stats),
                replay=replay_lib.update_priorities(state.replay, idx, priorities),
                updates=n_updates,
            )
            return state, metrics

        batches = (w, tgt, weights, idx, use_td, jax.random.split(step_key, count))
        return jax.lax.scan(update, state.replace(key=key), batches)

    # --- the scanned program --------------------------------------------------------------

    def iteration(self, state: TrainState, index: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """Act once, then learn if this is a learning iteration. `index` is the acting step this
        iteration takes (= state.iteration). It comes from outside the state so that, when seeds
        are vmapped, the learn/skip decision stays one unbatched `cond` and not a `select` that
        would run the learner on every iteration."""
        state, act_metrics = self.act(state)
        state, learn_metrics = self.maybe_learn(state, index, self._learn_iteration)
        return state, {**act_metrics, **learn_metrics}

    def _learn_iteration(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        # Metrics per update ([count]): a divergence is reported at the exact update.
        return self.learn_group(state, self.cfg.updates_per_iteration)

    def maybe_learn(self, state: Any, index: jax.Array, learn: Any) -> tuple[Any, dict[str, jax.Array]]:
        """`learn(state)` on the iterations the replay ratio asks for once `learning_starts` env
        steps are collected (env steps count every env of the run), zeros of its metrics otherwise."""
        cfg = self.cfg
        done = index + 1  # acting steps taken after this iteration's
        learning = (done * cfg.num_envs >= cfg.learning_starts) & (done % cfg.learn_every == 0)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(learn, state)[1])
        state, metrics = jax.lax.cond(learning, learn, lambda s: (s, zeros), state)
        learning = jnp.broadcast_to(learning.astype(jnp.float32), jax.tree.leaves(zeros)[0].shape)
        return state, {**metrics, "learning": learning}

    def _train_chunk_from(self, state: TrainState, start: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """`iterations_per_chunk` iterations starting at acting step `start`; metrics stacked over
        iterations."""
        indices = start + jnp.arange(self.cfg.iterations_per_chunk, dtype=jnp.int32)
        return jax.lax.scan(self.iteration, state, indices)

    def _train_chunk(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        return self._train_chunk_from(state, state.iteration)

    def _offline_chunk(self, state: TrainState, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """`count` learner updates without acting (the reference's offline phase after collection),
        in groups of `updates_per_iteration` as during collection when `count` allows."""
        group = self.cfg.updates_per_iteration if count % self.cfg.updates_per_iteration == 0 else 1
        state, metrics = jax.lax.scan(lambda s, _: self.learn_group(s, group), state, None, length=count // group)
        return state, jax.tree.map(lambda x: x.reshape((count,) + x.shape[2:]), metrics)

    # --- evaluation -----------------------------------------------------------------------

    def _evaluate(self, params: Any, batch_stats: Any, key: jax.Array) -> dict[str, jax.Array]:
        """One episode per eval env with the deterministic search (no Gumbel noise), the eval
        env's protocol (Atari: raw rewards, no episodic life, 27k-step cap)."""
        env = self.eval_env
        if env is None:
            raise ValueError("this Agent was built without an evaluation env")
        n = env.num_envs
        variables = {"params": params, "batch_stats": batch_stats}
        env_key, key = jax.random.split(key)
        env_state, ts = env.reset(env_key)
        frames = jnp.broadcast_to(ts.obs[:, None], (n, self.frame_stack) + ts.obs.shape[1:])
        cap = env.spec.max_episode_steps + 2

        def cond(carry):
            _, _, _, done, _, _, t, _ = carry
            return (~jnp.all(done)) & (t < cap)

        def body(carry):
            env_state, ts, frames, done, returns, lengths, t, key = carry
            key, search_key = jax.random.split(key)
            out = self.search(variables, search_key, _stack_obs(frames, self.frame_stack), 0.0, evaluation=True)
            env_state, ts = env.step(env_state, self.env_action(out.action))
            new = ts.episode_done & ~done
            returns = jnp.where(new, ts.episode_return, returns)
            lengths = jnp.where(new, ts.episode_length, lengths)
            return env_state, ts, _push_frame(frames, ts), done | new, returns, lengths, t + 1, key

        init = (
            env_state,
            ts,
            jnp.asarray(frames),
            jnp.zeros((n,), bool),
            jnp.zeros((n,), jnp.float32),
            jnp.zeros((n,), jnp.int32),
            jnp.int32(0),
            key,
        )
        _, _, _, done, returns, lengths, _, _ = jax.lax.while_loop(cond, body, init)
        return {"returns": returns, "lengths": lengths, "finished": done}


LOSS_TERMS = ("loss", "value_loss", "policy_loss", "reward_loss", "consistency_loss", "policy_entropy", "grad_norm")


def summarize_chunk(metrics: dict[str, Any]) -> dict[str, float]:
    """Host-side reduction of one chunk's stacked per-iteration metrics (one seed)."""
    import numpy as np

    m = {k: np.asarray(v) for k, v in metrics.items()}
    episodes = float(m["episodes"].sum())
    out = {
        "train_episodes": episodes,
        "train_return_mean": float(m["episode_return_sum"].sum() / episodes) if episodes else None,
        "train_length_mean": float(m["episode_length_sum"].sum() / episodes) if episodes else None,
        "search_value": float(m["search_value"].mean()),
    }
    learning = m["learning"] > 0
    if learning.any():
        for name in (*LOSS_TERMS, "td_fraction", "target_value", "importance_weight"):
            if name in m:
                out[name] = float(m[name][learning].mean())
    return out


def first_nonfinite(metrics: dict[str, Any]) -> tuple[int, str] | None:
    """(how many updates of this block came before the first non-finite loss term, that term)
    or None. `metrics` are one seed's learner metrics with a `learning` mask of the same shape."""
    import numpy as np

    learning = np.asarray(metrics["learning"]).reshape(-1) > 0
    bad = np.zeros_like(learning)
    names = [n for n in LOSS_TERMS if n in metrics]
    for name in names:
        bad |= ~np.isfinite(np.asarray(metrics[name]).reshape(-1)) & learning
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    term = next(n for n in names if not np.isfinite(np.asarray(metrics[n]).reshape(-1)[first]))
    return int(learning[:first].sum()), term
