"""The compiled program of a run: one seed's `CompiledAgent` laid out over seeds (vmapped), an envpool pool
shared by the seeds, and local devices (data parallel). It is the one place that calls `jax.jit`
for training; the iteration itself is written once, in `ezv.agent`.

    program = Program(cfg)                         # envs, validation, the CompiledAgent, the compiled functions
    state = program.init()                         # seeds cfg.seed, ..., cfg.seed + num_seeds - 1
    state, metrics = program.chunk(state)          # one compiled chunk (log_interval env steps)
    program.seed_metrics(metrics)                  # per seed: {name: [iterations] array}
    program.evaluate_seeds(state, env_steps)       # per seed: {"returns", "lengths", "finished", "capped"}

Layouts of the state pytree (every leaf gets the leading axes):
- one seed, one device: a `TrainState`;
- `num_seeds` N > 1 with a pure-JAX env: [N, ...] (`jax.vmap` of the single-seed functions; seed s
  starts from PRNGKey(s) as a single run does, its envs from the sweep's env seed);
- N > 1 with envpool (env state in C++, not vmappable): a `SharedEnvState` whose pool holds
  N x num_envs envs; each seed's search and learner are vmapped, the pool steps all at once;
- `devices` D > 1: [D, ...] (or [D, N, ...]) sharded over a one-axis mesh with `shard_map`.
  Each device runs num_envs / D envs and its own replay; every update takes batch_size / D
  windows per device and applies the mean gradient, so the replicas' networks stay equal.
  With several processes (`ezv.distributed`) the mesh spans every process's devices; each process
  holds its own devices' shards, and reads counters, networks and metrics through `ezv.distributed`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ezv import agent as agent_lib, distributed, memory
from ezv.agent import CompiledAgent
from ezv.config import Config, validate
from ezv.envs.delay import delayed
from ezv.state import TrainState

AXIS = "devices"
SEEDS = "seeds"  # the vmap axis of seeds trained together
# Per-iteration metrics that add up over devices (the rest are averaged).
SUM_KEYS = frozenset({"episode_return_sum", "episode_length_sum", "episodes"})


@struct.dataclass
class SharedEnvState:
    seeds: TrainState  # [N, ...]; each seed's env_state is a placeholder
    env_state: Any  # the pool that steps every seed's envs


def split_seeds(tree: Any, num_seeds: int) -> Any:
    """[N * E, ...] -> [N, E, ...]: a pool's envs, seed by seed."""
    return jax.tree.map(lambda x: x.reshape((num_seeds, x.shape[0] // num_seeds) + x.shape[1:]), tree)


class SharedPool:
    """The iteration's phases (`ezv.agent.Phases`) for N seeds whose envs are one envpool pool:
    each seed's search, replay writes and learner are vmapped; the pool steps every seed's envs at once."""

    def __init__(self, agent: CompiledAgent, env: Any, num_seeds: int):
        self.cfg, self.agent, self.env, self.num_seeds = agent.cfg, agent, env, num_seeds

    def decide(self, state: SharedEnvState):
        seeds, out = jax.vmap(self.agent.decide, axis_name=SEEDS)(state.seeds)
        return state.replace(seeds=seeds), out

    def step_envs(self, state: SharedEnvState, action: jax.Array):
        flat = action.reshape((-1,) + action.shape[2:])
        pool_ts = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), state.seeds.timestep)
        env_state = self.agent.commit_planned_queues(self.env, state.env_state, pool_ts)
        env_state, ts = self.env.step(env_state, self.agent.model.to_env(flat))
        return env_state, split_seeds(ts, self.num_seeds)

    def record(self, state: SharedEnvState, out: Any, env_state: Any, ts: Any):
        seeds, metrics = jax.vmap(self.agent.record)(state.seeds, out, state.seeds.env_state, ts)
        return SharedEnvState(seeds=seeds, env_state=env_state), metrics

    def learn(self, state: SharedEnvState):
        seeds, metrics = jax.vmap(self.agent.learn)(state.seeds)
        return state.replace(seeds=seeds), metrics


def with_delay(cfg: Config, env: Any, max_delay: int) -> Any:
    """`env` with the run's execution-delay process up to `max_delay` (none at 0)."""
    if max_delay == 0:
        return env
    return delayed(env, max_delay, stochastic=cfg.stochastic_delay, change_prob=cfg.delay_change_prob)


class Program:
    """The envs, the agent and the compiled init / chunk / offline / evaluation functions of a run."""

    def __init__(self, cfg: Config, env_seed_offset: int = 0):
        import ezv.envs as envs

        self.cfg = cfg
        self.num_seeds, self.num_devices = cfg.num_seeds, cfg.devices
        self.shared_env = cfg.num_seeds > 1 and envs.runs_on_host(cfg.env_id, **cfg.env_options)
        # The envs are built before `validate` (it needs their spec), with counts that stay valid
        # whatever the flags say: a bad setting is reported below, before anything compiles.
        env_count = cfg.num_seeds * cfg.num_envs if self.shared_env else cfg.num_envs // max(cfg.devices, 1)
        self.env = envs.make(cfg.env_id, max(env_count, 1), cfg.seed + env_seed_offset, **cfg.env_options)
        validate(cfg, self.env.spec)
        def make_eval_env():
            return envs.make(cfg.env_id, cfg.eval_episodes, cfg.seed + 10_000, evaluation=True, **cfg.env_options)

        self.env, self.eval_env = with_delay(cfg, self.env, cfg.delay), with_delay(cfg, make_eval_env(), cfg.delay)
        # The same evaluation episodes at other delays (--eval-delays), each its own compiled evaluation and its
        # own envs (an envpool pool ignores the reset key, so a shared one would play other episodes).
        self.delay_eval_envs = {d: with_delay(cfg, make_eval_env(), d) for d in cfg.eval_delays}
        self.pure = self.env.pure
        self.agent = CompiledAgent(
            cfg, self.env, self.eval_env,
            envs_per_state=cfg.num_envs // cfg.devices,
            num_devices=cfg.devices,
            axis_name=AXIS if cfg.devices > 1 else None,
            seed_axis=SEEDS if cfg.num_seeds > 1 else None,
        )
        self.mesh = Mesh(np.array(distributed.mesh_devices(cfg.devices)), (AXIS,)) if cfg.devices > 1 else None
        self._compiled_chunk = self._replicate_first = None
        self._build()

    # --- keys -----------------------------------------------------------------------------

    def seed_keys(self) -> tuple[jax.Array, jax.Array]:
        """(init keys, evaluation keys), [N, 2] each: seed s uses PRNGKey(s) as a single run does."""
        keys = jnp.stack([jax.random.PRNGKey(self.cfg.seed + i) for i in range(self.num_seeds)])
        pairs = jax.vmap(jax.random.split)(keys)
        return pairs[:, 0], pairs[:, 1]

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        agent, multi = self.agent, self.num_seeds > 1
        # Per evaluation delay (None: the run's own setting): one seed's evaluation, and the seeds' vmapped.
        self._evaluate_one, self._evaluate_seeds = {}, {}
        for delay, env in [(None, self.eval_env), *self.delay_eval_envs.items()]:
            evaluate = functools.partial(agent.evaluate_episodes, env=env)
            self._evaluate_one[delay] = jax.jit(evaluate)
            self._evaluate_seeds[delay] = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, 0, None)))
        if self.shared_env:
            self._init = jax.jit(self._init_shared)
            self._chunk = jax.jit(self._chunk_shared, donate_argnums=0)
            self._offline = jax.jit(self._offline_shared, static_argnums=1, donate_argnums=0)
            return
        init_one = (lambda keys, shard: jax.vmap(agent.init, in_axes=(0, None))(keys, shard)) if multi else (
            lambda keys, shard: agent.init(keys[0], shard))
        chunk_one = jax.vmap(agent.chunk, in_axes=(0, None), axis_name=SEEDS) if multi else agent.chunk
        offline_one = jax.vmap(agent.offline, in_axes=(0, None)) if multi else agent.offline
        if self.mesh is None:
            self._init = jax.jit(lambda keys: init_one(keys, 0))
            self._chunk = jax.jit(chunk_one, donate_argnums=0)
            self._offline = jax.jit(offline_one, static_argnums=1, donate_argnums=0)
            return

        def expand(tree):
            return jax.tree.map(lambda x: x[None], tree)

        def squeeze(tree):
            return jax.tree.map(lambda x: x[0], tree)

        def shard(fn, in_specs, out_specs):
            return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

        self._init = jax.jit(shard(lambda keys: expand(init_one(keys, jax.lax.axis_index(AXIS))), P(), P(AXIS)))
        self._chunk = jax.jit(
            shard(lambda s, start: expand(chunk_one(squeeze(s), start)), (P(AXIS), P()), (P(AXIS), P(AXIS))),
            donate_argnums=0,
        )
        self._offline = jax.jit(
            lambda s, count: shard(lambda s: expand(offline_one(squeeze(s), count)), P(AXIS), (P(AXIS), P(AXIS)))(s),
            static_argnums=1, donate_argnums=0,
        )

    # --- envpool pool shared by the seeds ---------------------------------------------------

    def _init_shared(self, keys: jax.Array) -> SharedEnvState:
        env_state, ts = self.env.reset(keys[0])
        placeholder = jnp.zeros((self.num_seeds,), jnp.int32)
        seeds = jax.vmap(self.agent.init_with_env)(keys, placeholder, split_seeds(ts, self.num_seeds))
        return SharedEnvState(seeds=seeds, env_state=env_state)

    def _chunk_shared(self, state: SharedEnvState, start: jax.Array):
        state, metrics = agent_lib.chunk(SharedPool(self.agent, self.env, self.num_seeds), state, start)
        return state, jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), metrics)  # [N, T]

    def _offline_shared(self, state: SharedEnvState, count: int):
        seeds, metrics = jax.vmap(self.agent.offline, in_axes=(0, None))(state.seeds, count)
        return state.replace(seeds=seeds), metrics

    # --- the run's functions ----------------------------------------------------------------

    def init(self) -> Any:
        """A fresh state typed and placed as a restored one is (no weak types: gymnax keeps Python ints in its env
        states; committed to its device), so that the chunk lowers to the same program for a new and a resumed
        run and a resume finds it in the compilation cache."""
        state = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype) if x.aval.weak_type else x,
                             self._init(self.seed_keys()[0]))
        if self.mesh is not None:  # shard_map's outputs are committed already
            return state
        return jax.device_put(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))

    def abstract_state(self) -> Any:
        """Shapes, dtypes and shardings of `init()`'s state, without building it."""
        shapes = jax.eval_shape(self._init, self.seed_keys()[0])
        sharding = (NamedSharding(self.mesh, P(AXIS)) if self.mesh is not None
                    else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def compile(self, state: Any) -> None:
        """Compile the training chunk for this state ahead of the first call (to time it apart), and refuse one
        that would not fit its devices' free memory (`ezv.memory`)."""
        self._compiled_chunk = self._chunk.lower(state, jnp.int32(self.acting_steps(state))).compile()
        memory.check_chunk_fits(self.cfg, self._compiled_chunk, memory.local_devices(self.mesh))

    def chunk(self, state: Any) -> tuple[Any, dict[str, jax.Array]]:
        fn = self._compiled_chunk or self._chunk
        return fn(state, jnp.int32(self.acting_steps(state)))

    def offline(self, state: Any, count: int) -> tuple[Any, dict[str, jax.Array]]:
        return self._offline(state, count)

    def train_states(self, state: Any) -> TrainState:
        return state.seeds if self.shared_env else state

    def acting_steps(self, state: Any) -> int:
        """Acting steps taken (every env steps once per acting step)."""
        return distributed.first_value(self.train_states(state).iteration)

    def env_steps(self, state: Any) -> int:
        return self.acting_steps(state) * self.cfg.num_envs

    def updates(self, state: Any) -> int:
        return distributed.first_value(self.train_states(state).updates)

    def restart_envs(self, state: Any, key: jax.Array) -> Any:
        """Fresh episodes for envs whose state could not be saved (envpool), after a restore."""
        if self.shared_env:
            env_state, ts = self.env.reset(key)
            adopt = jax.jit(jax.vmap(self.agent.adopt_envs))
            seeds = adopt(state.seeds, state.seeds.env_state, split_seeds(ts, self.num_seeds))
            state = SharedEnvState(seeds=seeds, env_state=env_state)
        elif self.num_seeds > 1:
            raise NotImplementedError("vmapped seeds run on pure-JAX envs only")
        else:
            state = jax.jit(self.agent.restart_envs)(state, key)
        # The chunk donates the state leaf by leaf: no two leaves may share a buffer (a reset
        # returns one array of zeros for several flags).
        return jax.tree.map(jnp.copy, state)

    def seed_variables(self, state: Any, seed_index: int) -> tuple[Any, Any]:
        """(params, batch_stats) of one seed (one device's replica: device 0's, or this process's first)."""
        ts = self.train_states(state)
        variables = (ts.params, ts.batch_stats)
        if self.mesh is not None:
            variables = jax.tree.map(distributed.local_replica, variables)
        if self.num_seeds > 1:
            variables = jax.tree.map(lambda x: x[seed_index], variables)
        return variables

    def model_variables(self, state: Any) -> dict[str, Any]:
        """{"params", "batch_stats"} of every seed (device 0's replica): what a checkpoint's `model` holds. With
        several processes, an array replicated on every device (each process saves what it holds)."""
        ts = self.train_states(state)
        model = {"params": ts.params, "batch_stats": ts.batch_stats}
        if self.mesh is None:
            return model
        if distributed.process_count() == 1:
            return jax.tree.map(lambda x: x[0], model)
        if self._replicate_first is None:  # one compiled program for every save
            self._replicate_first = jax.jit(lambda tree: jax.tree.map(lambda x: x[0], tree),
                                            out_shardings=NamedSharding(self.mesh, P()))
        return self._replicate_first(model)

    def evaluate_seeds(self, state: Any, env_steps: int, max_steps: int | None = None,
                       delay: int | None = None) -> list[dict[str, np.ndarray]]:
        """One evaluation per seed (greedy search, the domain's evaluation protocol), every episode
        stopped after `max_steps` agent steps (None: the eval env's own cap). The cap is an argument
        of the one compiled evaluation, so periodic and final evaluations share it. `delay`: at that
        execution delay (one of --eval-delays) instead of the run's own; the same episodes' seeds."""
        cap = self.eval_env.spec.max_episode_steps + 2
        limit = np.int32(cap if max_steps is None else min(max_steps, cap))
        eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(self.seed_keys()[1])
        if self.num_seeds > 1 and self.pure:
            ts = self.train_states(state)
            params, stats = ts.params, ts.batch_stats
            if self.mesh is not None:
                params, stats = jax.tree.map(distributed.local_replica, (params, stats))
            out = jax.device_get(self._evaluate_seeds[delay](params, stats, eval_keys, limit))
            return [{k: v[i] for k, v in out.items()} for i in range(self.num_seeds)]
        results = []
        for i in range(self.num_seeds):
            params, stats = self.seed_variables(state, i)
            results.append(jax.device_get(self._evaluate_one[delay](params, stats, eval_keys[i], limit)))
        return results

    def seed_metrics(self, metrics: dict[str, jax.Array]) -> list[dict[str, np.ndarray]]:
        """Per seed, each metric over the chunk's iterations (or updates), summed or averaged over devices."""
        host = {k: np.asarray(v) for k, v in distributed.gather(metrics).items()}
        rows = []
        for i in range(self.num_seeds):
            row = {}
            for name, value in host.items():
                if self.mesh is not None:
                    value = value.sum(0) if name in SUM_KEYS else value.mean(0)
                if self.num_seeds > 1:
                    value = value[i]
                row[name] = value
            rows.append(row)
        return rows
