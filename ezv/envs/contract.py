"""`check_env`: play random actions in any `VecEnv` (yours included) and check ezv's env contract step by step.

    report = ezv.envs.check_env("Corridor-v0")          # or an id with options, or a VecEnv
    print(report)                                        # episodes seen, their returns and lengths

The contract (`ezv.envs.core`): a reset starts every env (`first`, reward 0); the step after an episode
ends (`terminated` or `truncated`, never both) is a `first` step whose action is ignored, with reward 0;
`episode_done` marks exactly the steps that end an episode, with its undiscounted return and its length in
agent steps (at most `max_episode_steps`); observations keep the spec's shape and dtype and are finite; a
pure env's reset is a function of its key. Violations raise `EnvContractError` naming the step and env.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from ezv.envs.core import VecEnv
from ezv.envs.errors import EnvContractError


@dataclasses.dataclass(frozen=True)
class ContractReport:
    env_id: str
    steps: int
    num_envs: int
    episodes: int
    mean_return: float | None
    mean_length: float | None
    terminated: int
    truncated: int

    def __str__(self) -> str:
        if not self.episodes:
            return (f"{self.env_id}: {self.steps} steps x {self.num_envs} envs kept the contract, but no episode "
                    "ended, so the late reset was not exercised (give more steps).")
        return (f"{self.env_id}: {self.steps} steps x {self.num_envs} envs kept the contract; {self.episodes} episodes "
                f"({self.terminated} terminated, {self.truncated} truncated), random-action return "
                f"{self.mean_return:.3g}, length {self.mean_length:.1f}.")


def check_env(env: VecEnv | str, steps: int | None = None, num_envs: int = 4, seed: int = 0,
              **options: Any) -> ContractReport:
    """Check `env` (a `VecEnv`, or an id built with `options`) over `steps` random-action steps (default:
    enough for two episodes at the time limit, at most 2000). Raises `EnvContractError` on a violation."""
    from ezv.envs.registry import make

    if isinstance(env, str):
        env = make(env, num_envs, seed, **options)
    steps = steps or min(2 * env.spec.max_episode_steps + 2, 2000)
    play = jax.jit(functools.partial(_play, env, steps))
    key = jax.random.PRNGKey(seed)
    ts0, trajectory = jax.device_get(play(key))
    _check_start(env, ts0, trajectory, lambda: jax.device_get(play(key))[0])
    return _check_steps(env, trajectory, steps)


def _fail(env: VecEnv, what: str) -> None:
    raise EnvContractError(f"{env.spec.env_id}: {what}")


def _play(env: VecEnv, steps: int, key: jax.Array) -> tuple[Any, Any]:
    """The reset's TimeStep and `steps` TimeSteps of uniformly random actions ([steps, N] leaves)."""
    reset_key, key = jax.random.split(key)
    state, ts0 = env.reset(reset_key)

    def body(state, key):
        return env.step(state, env.random_actions(key))

    _, trajectory = jax.lax.scan(body, state, jax.random.split(key, steps))
    return ts0, trajectory


def _check_start(env: VecEnv, ts0: Any, trajectory: Any, reset_again: Any) -> None:
    spec = env.spec
    expected = (env.num_envs, *spec.obs_shape)
    for label, obs in (("reset", ts0.obs), ("step", trajectory.obs[0])):
        if tuple(obs.shape) != expected or obs.dtype != spec.obs_dtype:
            _fail(env, f"{label} returned obs {obs.dtype}{list(obs.shape)}; the spec says "
                       f"{np.dtype(spec.obs_dtype).name}{list(expected)}.")
    if not (np.all(ts0.first) and np.all(ts0.reward == 0) and not np.any(ts0.episode_done)):
        _fail(env, "a reset must start every env (first=True, reward 0, no episode done).")
    if env.pure and not np.array_equal(np.asarray(reset_again().obs), np.asarray(ts0.obs)):
        _fail(env, "two resets with the same key gave different observations; reset must be a function of its key "
                   "(keep randomness in JAX keys, not in Python or numpy state).")


def _check_step(env: VecEnv, at: str, ts: Any, previous_last: np.ndarray) -> None:
    """One step's own rules, and the late reset after the previous step."""
    obs, reward, term, trunc, first, done = ts.obs, ts.reward, ts.terminated, ts.truncated, ts.first, ts.episode_done
    if np.issubdtype(obs.dtype, np.floating) and not np.all(np.isfinite(obs)):
        bad = np.flatnonzero(~np.isfinite(obs).all(axis=tuple(range(1, obs.ndim))))
        _fail(env, f"{at}: non-finite observation in env(s) {bad}.")
    if not np.all(np.isfinite(reward)):
        _fail(env, f"{at}: non-finite reward in env(s) {np.flatnonzero(~np.isfinite(reward))}.")
    if np.any(term & trunc):
        _fail(env, f"{at}: env(s) {np.flatnonzero(term & trunc)} are both terminated and truncated; a time limit "
                   "that hits a terminal state is a termination.")
    if not np.array_equal(first, previous_last):
        i = int(np.flatnonzero(first != previous_last)[0])
        ended = "ended" if previous_last[i] else "did not end"
        _fail(env, f"{at}, env {i}: first={bool(first[i])} after a step that {ended} its episode; the step after an "
                   "episode ends (and only that one) starts the next (late reset).")
    if np.any(first & ((reward != 0) | term | trunc | done)):
        _fail(env, f"{at}: a first step (a reset; its action ignored) must have reward 0 and end nothing.")
    if not np.array_equal(done, term | trunc):
        _fail(env, f"{at}: episode_done must be terminated | truncated.")


def _check_steps(env: VecEnv, traj: Any, steps: int) -> ContractReport:
    """Every step's rules, and each finished episode's statistics against its own rewards and length."""
    n = env.num_envs
    previous_last, elapsed, running = np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, np.float64)
    lengths, returns = [], []
    for t in range(steps):
        at = f"step {t + 1}"
        ts = jax.tree.map(lambda x, t=t: x[t], traj)
        _check_step(env, at, ts, previous_last)
        elapsed = np.where(ts.first, 0, elapsed + 1)
        running = np.where(ts.first, 0.0, running + ts.reward)
        if np.any(elapsed > env.spec.max_episode_steps):
            _fail(env, f"{at}: an episode ran past max_episode_steps ({env.spec.max_episode_steps}) without being "
                       "truncated.")
        for i in np.flatnonzero(ts.episode_done):
            if int(ts.episode_length[i]) != int(elapsed[i]):
                _fail(env, f"{at}, env {i}: episode_length {int(ts.episode_length[i])} but the episode took "
                           f"{int(elapsed[i])} agent steps.")
            if not np.isclose(float(ts.episode_return[i]), running[i], rtol=1e-4, atol=1e-4):
                _fail(env, f"{at}, env {i}: episode_return {float(ts.episode_return[i])} but its rewards sum to "
                           f"{running[i]:.6g}.")
            lengths.append(int(elapsed[i]))
            returns.append(float(running[i]))
        previous_last = ts.terminated | ts.truncated
    return ContractReport(env.spec.env_id, steps, n, len(lengths), float(np.mean(returns)) if returns else None,
                          float(np.mean(lengths)) if lengths else None, int(traj.terminated.sum()),
                          int(traj.truncated.sum()))
