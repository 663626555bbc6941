"""The reward model alone, supervised on a fixed replay: does a preset's network learn a task's reward
through its representation, dynamics and reward head, away from the RL loop?

    python -m benchmarks reward_probe --env-id pixels/CartpoleBalance-v1 --preset dmc_image_small [--updates 3000]
        [--cache DIR] [--set network__state_norm true] [--set learner__unroll_steps 1]

Envs of the task (ezv's own env, so action repeat, rendering and frame stacking are the agent's) take
uniformly random actions; the transitions go into an ezv replay, written as the agent writes them (no
execution delay: the model of a delayed run learns the undelayed MDP too). The
network of the preset (`EZNet.unroll`, BatchNorm in train mode, Adam) is trained on windows of K = unroll
steps from the training envs with the reward cross-entropy alone (optionally + the consistency loss, with
augmentation as the learner has it) and tested on windows of other envs (a different seed): held-out
cross-entropy per unroll step, beside predicting the training rewards' marginal distribution (a model that
ignores its input) and the targets' own entropy (the floor). Same numbers for a state id split where the
RL-trained reward model stalls: if the probe learns the reward, the model can, and the RL loop is at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

import numpy as np


def collect(env_id: str, cfg, num_envs: int, steps: int, seed: int, cache: str | None = None):
    """An ezv replay of `steps` rows of `num_envs` envs taking uniformly random actions, and the model.
    With `cache` (a folder), the replay is kept there and read back by a later probe of the same data."""
    import jax
    import jax.numpy as jnp

    from ezv import envs
    from ezv import replay as replay_lib
    from ezv.model import EZModel

    env = envs.make(env_id, num_envs, seed, **cfg.env_options)
    model = EZModel(cfg, env.spec)
    path = None
    if cache:
        options = "_".join(f"{k}{v}" for k, v in sorted(cfg.env_options.items()))
        path = os.path.join(cache, f"{env_id.replace('/', '_')}_{options}_{num_envs}x{steps}_seed{seed}.npz")
        if os.path.exists(path):
            with np.load(path) as data:
                return model, replay_lib.Replay(**{k: jnp.asarray(data[k]) for k in data.files})
    replay = replay_lib.init(steps, num_envs, env.spec.obs_shape, env.spec.obs_dtype, model.action_shape,
                             model.action_dtype)

    @functools.partial(jax.jit, donate_argnums=2)  # the replay is updated in place, not copied every step
    def step(env_state, ts, replay, key, iteration):
        action = env.random_actions(key)
        env_state, next_ts = env.step(env_state, action)
        replay = replay_lib.add(replay, iteration, obs=ts.obs, action=model.from_env(action), reward=next_ts.reward,
                                first=ts.first, last=ts.last, terminal=ts.terminated)
        return env_state, next_ts, replay

    key = jax.random.PRNGKey(seed)
    key, reset_key = jax.random.split(key)
    env_state, ts = env.reset(reset_key)
    for i in range(steps):
        key, k = jax.random.split(key)
        env_state, ts, replay = step(env_state, ts, replay, k, jnp.int32(i))
    if path:
        os.makedirs(cache, exist_ok=True)
        fields = {f.name: np.asarray(getattr(replay, f.name)) for f in dataclasses.fields(replay)
                  if getattr(replay, f.name) is not None}
        np.savez(path, **fields)
    return model, replay


def windows(replay, count: int, positions: int, frame_stack: int, seed: int):
    """`count` windows at uniformly drawn start rows whose whole window is written."""
    import jax.numpy as jnp

    from ezv import replay as replay_lib

    valid = np.flatnonzero(np.asarray(replay_lib.sampleable(replay, positions - 1)).reshape(-1))
    idx = np.random.default_rng(seed).choice(valid, count)
    return replay_lib.gather(replay, jnp.asarray(idx, jnp.int32), positions, frame_stack)


def probe(cfg, model, train_replay, test_replay, updates: int, consistency: bool, seed: int, report_every: int):
    """Rows (updates, held-out reward cross-entropy per unroll step [K], seconds)."""
    import jax
    import jax.numpy as jnp
    import optax

    from ezv import targets as targets_lib
    from ezv.learner import Learner
    from ezv.losses import negative_cosine
    from ezv.networks import EZNet

    K, B = cfg.learner.unroll_steps, cfg.learner.batch_size
    support, net = model.reward_support, model.net
    learner = Learner(cfg, model)  # its augmentation of the input and target stacks, as training has it
    variables = model.init_variables(jax.random.PRNGKey(seed))
    params, stats = variables["params"], variables["batch_stats"]
    opt = optax.chain(optax.clip_by_global_norm(cfg.learner.max_grad_norm), optax.adam(1e-3))
    opt_state = opt.init(params)

    def losses(params, stats, w, key, train):
        # Augmented on training steps only (a key), as the learner augments; evaluation sees the frames as they are.
        obs0, next_obs = learner.augmented_inputs(w, key) if key is not None else (w.obs[:, 0], w.obs[:, 1:K + 1])
        (_, _, reward, projection, target), upd = net.apply(
            {"params": params, "batch_stats": stats}, obs0, w.action[:, :K], next_obs, train=train,
            method=EZNet.unroll, mutable=["batch_stats"])
        mask = targets_lib.unroll_mask(w, K)[:, 1:].astype(jnp.float32)
        ce = support.cross_entropy(reward, reward_targets(cfg, w)) * mask
        cos = negative_cosine(projection, target) * mask
        return ce, cos, mask, upd["batch_stats"]

    @jax.jit
    def step(params, stats, opt_state, w, key):
        def loss(p):
            ce, cos, _, new_stats = losses(p, stats, w, key, True)
            total = ce.sum(1).mean() + (cfg.learner.consistency_coef * cos.sum(1).mean() if consistency else 0.0)
            return total, new_stats

        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        upd, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), stats, opt_state

    @jax.jit
    def refresh(params, stats, w, key):  # augmented as the training batches that made the averages
        return losses(params, stats, w, key, True)[3]

    @functools.partial(jax.jit, static_argnums=3)
    def evaluate(params, stats, w, batch_statistics=False):
        # In chunks of B windows: with `batch_statistics`, BatchNorm normalises by each chunk's statistics, as in
        # training, rather than by its running averages (a gap between the two shows up here).
        chunks = jax.tree.map(lambda x: x.reshape((-1, B) + x.shape[1:]), w)
        ce, _, mask, _ = jax.lax.map(lambda c: losses(params, stats, c, None, batch_statistics), chunks)
        return ce.sum((0, 1)) / jnp.maximum(mask.sum((0, 1)), 1)

    test = windows(test_replay, 16 * B, K + 1, model.frame_stack, seed + 1)
    seen = windows(train_replay, 16 * B, K + 1, model.frame_stack, seed + 3)
    sample = functools.partial(windows, train_replay, B, K + 1, model.frame_stack)
    key, rows, start = jax.random.PRNGKey(seed + 2), [], time.time()
    for i in range(1, updates + 1):
        key, k = jax.random.split(key)
        params, stats, opt_state = step(params, stats, opt_state, sample(seed + 10 + i), k)
        if i % report_every == 0 or i == updates:
            ce = np.asarray(evaluate(params, stats, test))
            rows.append((i, ce, time.time() - start))
            train_ce = np.asarray(evaluate(params, stats, seen))
            batch_ce = np.asarray(evaluate(params, stats, test, True))
            settled = stats
            for j in range(50):  # running averages re-estimated with the weights frozen: lag vs structure
                settled = refresh(params, settled, sample(seed + 10_000_000 + j), jax.random.PRNGKey(j))
            settled_ce = np.asarray(evaluate(params, settled, test))
            print(f"  {i} updates: reward CE per step held out {np.round(ce, 3)}, on training envs "
                  f"{np.round(train_ce, 3)}, held out with batch statistics {np.round(batch_ce, 3)}, with running "
                  f"averages re-estimated under frozen weights {np.round(settled_ce, 3)} "
                  f"({rows[-1][2]:.0f} s)", flush=True)
    return rows


def reward_targets(cfg, w):
    """[B, K] what the reward head is trained on: per-step rewards, or value prefixes (as the learner)."""
    from ezv import targets as targets_lib

    network = cfg.network
    return targets_lib.reward_targets(w, cfg.learner.unroll_steps, network.value_prefix, network.lstm_horizon)


def marginal_and_floor(cfg, model, replay, seed: int) -> tuple[float, float]:
    """Nats per step: the targets of 4,096 training windows against their marginal, and their own entropy."""
    from ezv import targets as targets_lib

    K = cfg.learner.unroll_steps
    w = windows(replay, 4096, K + 1, model.frame_stack, seed)
    ok = np.asarray(targets_lib.unroll_mask(w, K)[:, 1:]).reshape(-1)
    targets = np.asarray(model.reward_support.encode(reward_targets(cfg, w).reshape(-1)))[ok]
    log = lambda p: np.log(np.maximum(p, 1e-12))  # noqa: E731
    return float(-(targets * log(targets.mean(0))).sum(-1).mean()), float(-(targets * log(targets)).sum(-1).mean())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks reward_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="pixels/CartpoleBalance-v1")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--num-envs", type=int, default=16, help="training envs (the held-out envs: a quarter)")
    parser.add_argument("--steps", type=int, default=1000, help="agent steps per env")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--consistency", action="store_true", help="add the preset's consistency loss")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("FIELD", "VALUE"),
                        help="a config override, e.g. --set network__reward_bins 51 (YAML value)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="a folder to keep the collected replays in (rendering is slow)")
    args = parser.parse_args(argv)
    import yaml

    from ezv.config import make_config

    overrides = {name: yaml.safe_load(value) for name, value in args.set}
    cfg = make_config(args.env_id, args.preset, **overrides)
    start = time.time()
    model, train_replay = collect(args.env_id, cfg, args.num_envs, args.steps, args.seed, args.cache)
    _, test_replay = collect(args.env_id, cfg, max(1, args.num_envs // 4), args.steps, args.seed + 1000,
                             args.cache)
    marginal, floor = marginal_and_floor(cfg, model, train_replay, args.seed + 5)
    print(f"{args.env_id} ({cfg.preset}; {args.num_envs}+{max(1, args.num_envs // 4)} envs x {args.steps} steps "
          f"collected in {time.time() - start:.0f} s): reward targets against their marginal {marginal:.3f} nats "
          f"per step, their own entropy {floor:.3f}", flush=True)
    rows = probe(cfg, model, train_replay, test_replay, args.updates, args.consistency, args.seed, args.report_every)
    K = cfg.learner.unroll_steps
    print(f"\n| updates | {' | '.join(f'k={k}' for k in range(1, K + 1))} | sum | s |\n|---:|"
          + "---:|" * (K + 2))
    for i, ce, seconds in rows:
        print(f"| {i} | {' | '.join(f'{c:.3f}' for c in ce)} | {ce.sum():.2f} | {seconds:.0f} |")
