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
from typing import Any

import jax
import numpy as np

from ezv.envs.core import VecEnv


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
    import ezv.envs as envs
    from ezv.envs.custom import EnvContractError

    if isinstance(env, str):
        env = envs.make(env, num_envs, seed, **options)
    spec = env.spec
    steps = steps or min(2 * spec.max_episode_steps + 2, 2000)
    key = jax.random.PRNGKey(seed)

    def play(key):
        reset_key, key = jax.random.split(key)
        state, ts0 = env.reset(reset_key)

        def body(state, key):
            state, ts = env.step(state, env.random_actions(key))
            return state, ts

        _, trajectory = jax.lax.scan(body, state, jax.random.split(key, steps))
        return ts0, trajectory

    ts0, traj = jax.device_get(jax.jit(play)(key))
    name = spec.env_id

    def fail(what: str) -> None:
        raise EnvContractError(f"{name}: {what}")

    expected = (env.num_envs, *spec.obs_shape)
    for label, obs in (("reset", ts0.obs), ("step", traj.obs[0])):
        if tuple(obs.shape) != expected or obs.dtype != spec.obs_dtype:
            fail(f"{label} returned obs {obs.dtype}{list(obs.shape)}; the spec says "
                 f"{np.dtype(spec.obs_dtype).name}{list(expected)}.")
    if not (np.all(ts0.first) and np.all(ts0.reward == 0) and not np.any(ts0.episode_done)):
        fail("a reset must start every env (first=True, reward 0, no episode done).")
    if env.pure:
        again = jax.device_get(jax.jit(play)(key))[0]
        if not np.array_equal(np.asarray(again.obs), np.asarray(ts0.obs)):
            fail("two resets with the same key gave different observations; reset must be a function of its key "
                 "(keep randomness in JAX keys, not in Python or numpy state).")

    previous_last = np.zeros(env.num_envs, bool)
    elapsed = np.zeros(env.num_envs, np.int64)
    running = np.zeros(env.num_envs, np.float64)
    lengths, returns, n_term, n_trunc = [], [], 0, 0
    for t in range(steps):
        at = f"step {t + 1}"
        obs, reward = traj.obs[t], traj.reward[t]
        term, trunc, first, done = traj.terminated[t], traj.truncated[t], traj.first[t], traj.episode_done[t]
        if np.issubdtype(obs.dtype, np.floating) and not np.all(np.isfinite(obs)):
            bad = np.flatnonzero(~np.isfinite(obs).all(axis=tuple(range(1, obs.ndim))))
            fail(f"{at}: non-finite observation in env(s) {bad}.")
        if not np.all(np.isfinite(reward)):
            fail(f"{at}: non-finite reward in env(s) {np.flatnonzero(~np.isfinite(reward))}.")
        if np.any(term & trunc):
            fail(f"{at}: env(s) {np.flatnonzero(term & trunc)} are both terminated and truncated; a time limit that "
                 "hits a terminal state is a termination.")
        if not np.array_equal(first, previous_last):
            i = int(np.flatnonzero(first != previous_last)[0])
            ended = "ended" if previous_last[i] else "did not end"
            fail(f"{at}, env {i}: first={bool(first[i])} after a step that {ended} its episode; the step after an "
                 "episode ends (and only that one) starts the next (late reset).")
        if np.any(first & ((reward != 0) | term | trunc | done)):
            fail(f"{at}: a first step (a reset; its action ignored) must have reward 0 and end nothing.")
        last = term | trunc
        if not np.array_equal(done, last):
            fail(f"{at}: episode_done must be terminated | truncated.")
        elapsed = np.where(first, 0, elapsed + 1)
        running = np.where(first, 0.0, running + reward)
        if np.any(elapsed > spec.max_episode_steps):
            fail(f"{at}: an episode ran past max_episode_steps ({spec.max_episode_steps}) without being truncated.")
        for i in np.flatnonzero(done):
            if int(traj.episode_length[t][i]) != int(elapsed[i]):
                fail(f"{at}, env {i}: episode_length {int(traj.episode_length[t][i])} but the episode took "
                     f"{int(elapsed[i])} agent steps.")
            if not np.isclose(float(traj.episode_return[t][i]), running[i], rtol=1e-4, atol=1e-4):
                fail(f"{at}, env {i}: episode_return {float(traj.episode_return[t][i])} but its rewards sum to "
                     f"{running[i]:.6g}.")
            lengths.append(int(elapsed[i]))
            returns.append(float(running[i]))
        n_term += int(term.sum())
        n_trunc += int(trunc.sum())
        previous_last = last
    return ContractReport(name, steps, env.num_envs, len(lengths), float(np.mean(returns)) if returns else None,
                          float(np.mean(lengths)) if lengths else None, n_term, n_trunc)
