"""Checks for when a pixel DMC agent does not learn (cartpole tasks only):

    python -m benchmarks pixel_probe [--env-id CartpoleBalance-v1] [--size 64] [--channels 16]

1. Lag: the pixel pool and the state pool of one task, same seed, same actions, run the same episode.
   The cart's pixel column (the mean column of its orange pixels in the cart's rows) is fitted linearly
   to the state's cart position at lags -3..3; the best fit should be at lag 0 (the frame shows the state
   the agent is in, not an earlier one).
2. Trunk: `dmc_image_small`'s `ConvRepresentation` with a linear read-out, trained supervised on single
   frames of 6 envs to regress the cart position and the pole's cos/sin (standardised), tested on the
   other 2 envs' frames. Held-out R² after a few hundred updates says whether the trunk can read the
   positions off a frame at all (velocities, which need the frame stack, are not probed).
3. Reward scale: the cross-entropy of `dmc_image_small`'s two-hot reward targets (agent-step rewards of
   uniform random actions, action repeat 2) against their marginal distribution, and their own entropy:
   what a reward model that ignores its input scores, and the floor, to read a logged reward loss against.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _collect(env_id: str, size: int, num_envs: int, steps: int, seed: int):
    """Frames [N, T, size, size, 3] uint8 and positions [N, T, D] of N envs over T control steps."""
    from ezv.envs import gl

    gl.ensure_rendering(env_id, 0)
    import envpool

    kw = dict(env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, num_threads=1, seed=seed)
    states = envpool.make(env_id, **kw)
    pixels = envpool.make(env_id, from_pixels=True, render_width=size, render_height=size, render_camera_id=0, **kw)
    states.reset()
    pixels.reset()
    rng = np.random.default_rng(seed)
    frames, positions = [], []
    for t in range(steps):
        # Slow sweeps plus noise: the cart travels far and the pole falls, so every state variable varies.
        action = np.clip(np.sin(t / 20.0 + np.arange(num_envs)[:, None]) + 0.5 * rng.normal(size=(num_envs, 1)), -1, 1)
        obs, reward, *_ = states.step(action)
        frame, reward_px, *_ = pixels.step(action)
        if not np.allclose(reward, reward_px):
            raise AssertionError("the pixel and state pools diverged: same seed and actions should run one episode")
        frames.append(frame.transpose(0, 2, 3, 1))
        positions.append(obs["position"])
    return np.stack(frames, 1), np.stack(positions, 1)  # [N, T, ...]


def cart_column(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] -> [...] the mean column of the cart's orange pixels in its rows (NaN where fewer than 8)."""
    h = frames.shape[-3]
    band = frames[..., int(0.45 * h): int(0.55 * h), :, :].astype(np.int32)
    orange = (band[..., 0] > 150) & (band[..., 2] < 130)
    count = orange.sum((-2, -1))
    cols = np.arange(frames.shape[-2])
    column = (orange * cols).sum((-2, -1)) / np.maximum(count, 1)
    return np.where(count >= 8, column, np.nan)


def lag_fit(frames: np.ndarray, cart_x: np.ndarray, lags=range(-3, 4)) -> dict[int, float]:
    """rms residual (pixels) of a linear fit of the cart's pixel column at t to its position at t + lag."""
    column = cart_column(frames)  # [N, T]
    out = {}
    for lag in lags:
        lo, hi = max(0, -lag), column.shape[1] - max(0, lag)
        a, b = column[:, lo:hi].reshape(-1), cart_x[:, lo + lag:hi + lag].reshape(-1)
        ok = ~np.isnan(a) & (np.abs(b) < 1.0)  # the cart in view
        design = np.stack([b[ok], np.ones(ok.sum())], 1)
        _, residual, *_ = np.linalg.lstsq(design, a[ok], rcond=None)
        out[lag] = float(np.sqrt(residual[0] / ok.sum()))
    return out


def trunk_probe(frames: np.ndarray, targets: np.ndarray, channels: int, updates: int, seed: int):
    """Held-out R² per target after each checkpoint of supervised training of the conv trunk. frames
    [N, T, ...], targets [N, T, D]: the last quarter of the envs is held out whole (neighbouring control
    steps of one env are near-duplicates, so a split by frame would measure interpolation)."""
    import flax.linen as nn
    import jax
    import optax

    from ezv.networks import ConvRepresentation

    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            z = ConvRepresentation(channels, 1)(x, train)
            return nn.Dense(targets.shape[-1])(z.reshape(z.shape[0], -1))

    rng = np.random.default_rng(seed)
    num_envs, steps = frames.shape[:2]
    held_out = max(1, num_envs // 4)
    y = ((targets - targets.mean((0, 1))) / targets.std((0, 1))).astype(np.float32).reshape(-1, targets.shape[-1])
    frames = frames.reshape((-1,) + frames.shape[2:])
    train_idx = np.arange((num_envs - held_out) * steps)
    test_idx = np.arange((num_envs - held_out) * steps, num_envs * steps)
    net, opt = Probe(), optax.adam(1e-3)
    variables = net.init(jax.random.PRNGKey(seed), frames[:2], False)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = opt.init(params)

    @jax.jit
    def step(params, stats, opt_state, x, target):
        def loss(p):
            out, upd = net.apply({"params": p, "batch_stats": stats}, x, True, mutable=["batch_stats"])
            return ((out - target) ** 2).mean(), upd["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates_, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates_), stats, opt_state

    predict = jax.jit(lambda params, stats, x: net.apply({"params": params, "batch_stats": stats}, x, False))
    rows, start = [], time.time()
    for i in range(1, updates + 1):
        batch = rng.choice(train_idx, 32)
        params, stats, opt_state = step(params, stats, opt_state, frames[batch], y[batch])
        if i in (250, 500, 1000, 2000, updates):
            pred = np.concatenate([np.asarray(predict(params, stats, frames[test_idx[j:j + 256]]))
                                   for j in range(0, len(test_idx), 256)])
            r2 = 1 - ((pred - y[test_idx]) ** 2).mean(0) / y[test_idx].var(0)
            rows.append((i, r2, time.time() - start))
    return rows


def reward_marginal(env_id: str, num_envs: int = 16, agent_steps: int = 1000, seed: int = 1) -> tuple[float, float]:
    """(cross-entropy against the marginal, the targets' own entropy), nats per unrolled step."""
    import envpool
    import jax.numpy as jnp

    from ezv.config import load_preset
    from ezv.supports import Support

    network = load_preset("dmc_image_small").network
    support = Support(network.reward_bins, network.reward_h_max)
    pool = envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, num_threads=1,
                        seed=seed)
    pool.reset()
    rng, rewards = np.random.default_rng(seed), []
    for _ in range(agent_steps):
        action = rng.uniform(-1, 1, (num_envs, 1))
        rewards.append(sum(pool.step(action)[1] for _ in range(2)))  # action repeat 2, rewards summed
    targets = np.asarray(support.encode(jnp.asarray(np.concatenate(rewards))))
    marginal = targets.mean(0)
    log = lambda p: np.log(np.maximum(p, 1e-12))  # noqa: E731
    return float(-(targets * log(marginal)).sum(-1).mean()), float(-(targets * log(targets)).sum(-1).mean())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pixel_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartpoleBalance-v1", help="an envpool cartpole task (state id)")
    parser.add_argument("--size", type=int, default=64, help="frame size (dmc_image_small: 64)")
    parser.add_argument("--channels", type=int, default=16, help="trunk width (dmc_image_small: 16)")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.env_id.startswith("Cartpole"):
        parser.error("the cart finder knows the cartpole tasks only")
    frames, positions = _collect(args.env_id, args.size, num_envs=8, steps=1000, seed=args.seed)
    print(f"{args.env_id} at {args.size}x{args.size}: {frames.shape[0] * frames.shape[1]} frames")
    print("| lag (state t+lag vs frame t) | rms residual, pixels |\n|---:|---:|")
    for lag, rms in lag_fit(frames, positions[..., 0]).items():
        print(f"| {lag:+d} | {rms:.3f} |")
    targets = positions[..., :3]  # cart position, pole cos, pole sin
    print("\n| updates | held-out R² cart x | cos | sin | s |\n|---:|---:|---:|---:|---:|")
    for i, r2, seconds in trunk_probe(frames, targets, args.channels, args.updates, args.seed):
        print(f"| {i} | {r2[0]:.3f} | {r2[1]:.3f} | {r2[2]:.3f} | {seconds:.0f} |")
    marginal, floor = reward_marginal(args.env_id)
    print(f"\nreward targets (random actions, dmc_image_small's support): against their marginal {marginal:.2f} nats "
          f"per unrolled step ({5 * marginal:.1f} over 5 steps); their own entropy {floor:.2f} ({5 * floor:.2f})")
