"""How EZ-V2 learns: sample windows → reanalyse them with the target network → targets → gradient step.

    learner = Learner(cfg, model)
    state, metrics = learner.learn_group(state, count)   # `count` updates, metrics [count]

Every function here is pure in the `TrainState`; the learner never touches envs. With data
parallelism (`axis_name`), each device samples `batch_size` windows from its own replay and the
gradients and normalisation statistics are averaged over the mesh axis.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ezv import augment, replay as replay_lib, targets as targets_lib
from ezv.config import Config
from ezv.losses import Targets, Unroll, ez_loss
from ezv.model import EZModel
from ezv.networks import EZNet
from ezv.search import SearchOutput
from ezv.state import TrainState

Metrics = dict[str, jax.Array]


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
    """The reference's schedule: linear warm-up over `warmup_fraction` of all updates, then
    x`lr_decay_rate` every `lr_decay_updates` updates (reference §5), at most `lr_decays` times (the
    MuZero card's piecewise x1 / x0.1 / x0.01: no warm-up, 25k updates, 2 decays)."""
    learner_cfg = cfg.learner
    warmup = int(learner_cfg.warmup_fraction * cfg.total_updates)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, learner_cfg.learning_rate, max(warmup, 1)),
            optax.exponential_decay(
                learner_cfg.learning_rate, learner_cfg.lr_decay_updates, learner_cfg.lr_decay_rate, staircase=True,
                end_value=None if learner_cfg.lr_decays is None
                else learner_cfg.learning_rate * learner_cfg.lr_decay_rate ** learner_cfg.lr_decays,
            ),
        ],
        [warmup],
    )


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Global-norm clip, coupled L2 weight decay, then SGD+momentum or Adam on `learning_rate_schedule`."""
    learner_cfg = cfg.learner
    schedule = learning_rate_schedule(cfg)
    if learner_cfg.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=learner_cfg.momentum)
    else:
        opt = optax.adam(schedule)
    parts = [optax.clip_by_global_norm(learner_cfg.max_grad_norm)]
    if learner_cfg.weight_decay:
        parts.append(optax.add_decayed_weights(learner_cfg.weight_decay))
    return optax.chain(*parts, opt)


class Learner:
    """The learner's static settings and its pure functions of the state."""

    def __init__(self, cfg: Config, model: EZModel, *, batch_size: int | None = None, axis_name: str | None = None):
        """`batch_size`: windows per update on this device (default the config's); `axis_name`: the
        mesh axis gradients are averaged over (data parallelism), None on one device."""
        self.cfg, self.model = cfg, model
        self.batch_size = cfg.learner.batch_size if batch_size is None else batch_size
        self.axis_name = axis_name
        self.optimizer = make_optimizer(cfg)
        self.window = cfg.learner.unroll_steps + cfg.learner.td_steps + 1
        self.augment = cfg.learner.augment and model.spec.is_image
        # The first ⌊fraction x B⌋ windows of each (shuffled) batch get policy targets from a fresh search
        # (EZ-V1's `revisit_policy_search_rate`); the others reuse the policy stored when they were collected.
        # With several devices the count is per device's batch (2 x ⌊0.99 x 128⌋ = 252 of 256, not 253).
        self.searched_per_batch = math.floor(cfg.learner.reanalyse_fraction * self.batch_size + 1e-9)
        self.reuses_stored_policies = self.searched_per_batch < self.batch_size

    def importance_exponent(self, updates: jax.Array) -> jax.Array | float:
        """PER's β after `updates` updates: `replay.beta`, or rising linearly to `replay.beta_final` over the run."""
        replay_cfg = self.cfg.replay
        if replay_cfg.beta_final is None:
            return replay_cfg.beta
        progress = jnp.minimum(updates / max(self.cfg.total_updates, 1), 1.0)
        return replay_cfg.beta + (replay_cfg.beta_final - replay_cfg.beta) * progress

    def sample_batch(
        self, replay: replay_lib.Replay, key: jax.Array, beta: jax.Array | float | None = None
    ) -> tuple[jax.Array, jax.Array, replay_lib.Window]:
        """Prioritised start rows, their importance weights and windows of unroll + td + 1 positions."""
        replay_cfg = self.cfg.replay
        beta = replay_cfg.beta if beta is None else beta
        # A start row needs its whole window written: position K + n must exist.
        min_age = self.window - 1
        if self.reuses_stored_policies:
            key, order_key = jax.random.split(key)
        idx, weights = replay_lib.sample(
            replay, key, self.batch_size, replay_cfg.alpha, beta, replay_cfg.min_weight, min_age
        )
        if self.reuses_stored_policies:
            # Stratified sampling returns rows in storage order; shuffled, the windows that keep their stored
            # policies (the batch's last ones, `searched_windows`) are a random subset, as in EZ-V1.
            order = jax.random.permutation(order_key, self.batch_size)
            idx, weights = idx[order], weights[order]
        return idx, weights, replay_lib.gather(replay, idx, self.window, self.model.frame_stack)

    def searched_windows(self, count: int) -> np.ndarray | None:
        """Which of `count` batches' windows (flattened) the reanalysis searches; None: all of them."""
        if not self.reuses_stored_policies:
            return None
        return (np.arange(count)[:, None] * self.batch_size + np.arange(self.searched_per_batch)[None]).reshape(-1)

    def reanalysis_search(
        self, state: TrainState, w: replay_lib.Window, key: jax.Array, searched: np.ndarray | None = None
    ) -> tuple[jax.Array, SearchOutput | None]:
        """The target network's view of a batch of windows (reference §4): it encodes every window
        position once, and one batched search runs over the K+1 unroll positions of every window, or
        of the `searched` windows only.

        Returns (decoded values of every position [B, P], the search over the unroll positions; None
        when no window is searched).
        """
        K, B, P = self.cfg.learner.unroll_steps, w.reward.shape[0], self.window
        net, variables = self.model.net, state.target_variables
        latents = net.apply(variables, w.obs.reshape((B * P,) + w.obs.shape[2:]), method=EZNet.represent)
        logits, value_logits = net.apply(variables, latents, method=EZNet.predict)
        values = self.model.decode_value(value_logits)

        if searched is not None and len(searched) == 0:
            return values.reshape(B, P), None

        def unroll_positions(x):  # [B*P, ...] -> [B*(K+1), ...] (or the searched windows' positions)
            if searched is not None:
                x = x.reshape((B, P) + x.shape[1:])[searched, : K + 1]
                return x.reshape((-1,) + x.shape[2:])
            return x.reshape((B, P) + x.shape[1:])[:, : K + 1].reshape((B * (K + 1),) + x.shape[1:])

        key, root = self.model.roots_from_outputs(
            unroll_positions(latents), unroll_positions(logits), unroll_positions(values), key
        )
        search = self.model.search_roots(variables, key, root)
        return values.reshape(B, P), search.replace(tree=None)

    def build_targets(
        self, state: TrainState, w: replay_lib.Window, values: jax.Array, search: SearchOutput | None,
        searched: np.ndarray | None = None,
    ) -> tuple[Targets, jax.Array]:
        """Value, reward and policy targets from the reanalysis (reference §4); with `searched`, the
        other windows' policy targets are their stored policies (values are TD then, see `validate`).
        Returns (targets without the projection targets, which the online network computes in the
        loss; per-sample TD choice [B])."""
        cfg, learner_cfg = self.cfg, self.cfg.learner
        K, n, B = learner_cfg.unroll_steps, learner_cfg.td_steps, w.reward.shape[0]
        mask = targets_lib.unroll_mask(w, K)
        terminal = w.terminal[:, : K + 1]
        horizon = None
        if learner_cfg.td_age_env_steps is not None:
            horizon = targets_lib.age_horizon(w.step, state.iteration, cfg.num_envs, n, learner_cfg.td_age_env_steps)
        td = targets_lib.n_step_returns(w, values, K, n, learner_cfg.discount, horizon)
        if learner_cfg.value_target == "mixed":
            use_td = targets_lib.use_td_target(
                w.step, state.iteration, state.updates, cfg.num_envs,
                learner_cfg.mixed_start_updates, learner_cfg.mixed_recent_env_steps,
            )
        else:
            use_td = jnp.full((B,), learner_cfg.value_target == "td")
        if searched is None:
            search_values, policy = search.value.reshape(B, K + 1), search.policy.reshape(B, K + 1, -1)
            extra = self.model.policy_target_fields(search, (B, K + 1))
        else:  # TD values only; stored policies where no fresh search ran
            search_values, policy, extra = td, w.policy[:, : K + 1], {}
            if search is not None:
                policy = policy.at[searched].set(search.policy.reshape((len(searched), K + 1, -1)))
        tgt = Targets(
            value=targets_lib.mixed_value_target(use_td, td, search_values, terminal),
            reward=targets_lib.reward_targets(w, K, cfg.network.value_prefix, cfg.network.lstm_horizon),
            policy=policy,
            projection=jnp.zeros((B,)),  # a placeholder per sample: the loss computes the real ones
            mask=mask,
            policy_mask=mask & ~terminal,
            **extra,
        )
        return tgt, use_td

    def augmented_inputs(self, w: replay_lib.Window, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(s_0 input [B, ...], the K next observations [B, K, ...]) with image augmentation when on."""
        K = self.cfg.learner.unroll_steps
        obs0, next_obs = w.obs[:, 0], w.obs[:, 1 : K + 1]
        if not self.augment:
            return obs0, next_obs
        # The input and the consistency targets get independent draws; the K target stacks of
        # one sample share one shift and intensity (the reference augments them as one tensor).
        k0, k1 = jax.random.split(key)
        obs0 = augment.augment(k0, obs0)
        by_sample = jnp.moveaxis(next_obs, 1, -2)  # [B, H, W, K, C*S]
        merged = by_sample.reshape(by_sample.shape[:-2] + (-1,))
        augmented = augment.augment(k1, merged).reshape(by_sample.shape)
        return obs0, jnp.moveaxis(augmented, -2, 1)

    def gradient_step(
        self, state: TrainState, w: replay_lib.Window, tgt: Targets, weights: jax.Array, key: jax.Array
    ) -> tuple[TrainState, Metrics, jax.Array]:
        """One optimiser step on the EZ-V2 loss. Returns (state, loss metrics, decoded v̂(s_0) [B])."""
        key, entropy_key = jax.random.split(key)
        obs0, next_obs = self.augmented_inputs(w, key)
        actions = w.action[:, : self.cfg.learner.unroll_steps]

        def loss_fn(params):
            (policy, value, reward, projection, projection_target), updated = self.model.net.apply(
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
                self.cfg.learner,
                self.model.value_support,
                self.model.reward_support,
                continuous_loss=self.model.policy_loss_kind,
                entropy_key=entropy_key,
            )
            return loss, (metrics, updated["batch_stats"], value[:, 0])

        (_, (metrics, batch_stats, value0_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if self.axis_name is not None:
            # Data parallel: every device applies the mean gradient of the global batch, and keeps
            # the same normalisation statistics, so the replicas stay identical. One flat vector, so
            # one all-reduce per update: across processes each collective costs a network round trip.
            flat, unflatten = jax.flatten_util.ravel_pytree((grads, batch_stats))
            grads, batch_stats = unflatten(jax.lax.pmean(flat, self.axis_name))
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        state = state.replace(
            params=optax.apply_updates(state.params, updates), batch_stats=batch_stats, opt_state=opt_state
        )
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return state, metrics, self.model.decode_value(value0_logits)

    def learn_group(self, state: TrainState, count: int) -> tuple[TrainState, Metrics]:
        """`count` learner updates whose batches are sampled and reanalysed together.

        The `count` batches are drawn from the replay as it stands at the start of the group, and
        their reanalysis is one search over count x B x (K+1) roots with the target network (a
        refresh that falls inside the group takes effect from the next group). Then `count`
        gradient steps run in sequence, each writing its batch's priorities: priorities and target
        refreshes lag by at most count - 1 updates, and `count` searches become one search
        `count` times larger (far fewer kernel launches on a GPU). Returns per-update metrics [count].
        """
        B = self.batch_size
        key, sample_key, search_key, step_key = jax.random.split(state.key, 4)
        sample = functools.partial(self.sample_batch, beta=self.importance_exponent(state.updates))
        idx, weights, w = jax.vmap(sample, in_axes=(None, 0))(state.replay, jax.random.split(sample_key, count))
        flat = jax.tree.map(lambda x: x.reshape((count * B,) + x.shape[2:]), w)
        searched = self.searched_windows(count)
        values, search = self.reanalysis_search(state, flat, search_key, searched)
        tgt, use_td = self.build_targets(state, flat, values, search, searched)
        tgt, use_td = jax.tree.map(lambda x: x.reshape((count, B) + x.shape[1:]), (tgt, use_td))
        batches = (w, tgt, weights, idx, use_td, jax.random.split(step_key, count))
        return jax.lax.scan(self.update, state.replace(key=key), batches)

    def update(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
        """One gradient step on a reanalysed batch, its priorities, and the periodic target refresh."""
        w, tgt, weights, idx, use_td, key = batch
        state, metrics, value0 = self.gradient_step(state, w, tgt, weights, key)
        priorities = jnp.abs(value0 - tgt.value[:, 0]) + self.cfg.replay.priority_eps
        n_updates = state.updates + 1
        refresh = n_updates % self.cfg.learner.target_update_interval == 0
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

    def offline(self, state: TrainState, count: int) -> tuple[TrainState, Metrics]:
        """`count` learner updates without acting (the reference's offline phase after collection),
        in groups of `updates_per_iteration` as during collection when `count` allows. Metrics [count]."""
        group = self.cfg.updates_per_iteration if count % self.cfg.updates_per_iteration == 0 else 1
        state, metrics = jax.lax.scan(lambda s, _: self.learn_group(s, group), state, None, length=count // group)
        return state, jax.tree.map(lambda x: x.reshape((count,) + x.shape[2:]), metrics)
