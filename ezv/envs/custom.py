"""Your own environment under an id that every ezv entry point takes (the CLI, `ezv.Agent`, evaluation).

    def make_corridor(length: int = 8) -> ezv.envs.JaxEnv:       # options arrive as keyword arguments
        def reset(key):
            return state, obs                                      # any pytree of arrays, and one observation
        def step(state, action):
            return state, obs, reward, terminated                  # one agent step, no reset logic
        return ezv.envs.JaxEnv(reset, step, ezv.envs.Discrete(2), max_episode_steps=50)

    ezv.envs.register("Corridor-v0", make_corridor)                # then --env-id Corridor-v0 in this process
    python -m ezv.train --env-id mypkg.envs:make_corridor          # or name the factory: module:attribute

A factory returns one of
- `JaxEnv`: `reset(key) -> (state, obs)` and `step(state, action) -> (state, obs, reward, terminated)`,
  unbatched and pure JAX (randomness in `step` comes from a key the user keeps in the state);
- a gymnax environment object (`reset_env`, `step_env`, `default_params`), or `(env, params)`;
- a brax / MuJoCo Playground environment object (`reset(rng)`, `step(state, action)`, `action_size`);
- a gymnasium environment (`gymnasium.Env`): it runs on the host through a JAX callback
  (`ezv.envs.host`), is called once per env, and has envpool's limits.
ezv adds batching, the late auto-reset of `ezv.envs.core`, the time limit (`truncated`) and the episode
statistics. Everything about a JAX env is checked by tracing it once (`jax.eval_shape`) before anything
compiles; `EnvContractError` names what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ezv.envs.core import Box, Discrete, EnvSpec, VecEnv
from ezv.envs.errors import CUSTOM_DOMAIN, EnvContractError, EnvOptionError, UnknownEnvError
from ezv.envs.functional import SingleEnv, make_vec_env

BACKEND = "custom"
DOMAIN = CUSTOM_DOMAIN
# `module.path:attribute` names a factory without registering it (the form a run's config.yaml keeps).
IMPORT_FORM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclasses.dataclass(frozen=True)
class JaxEnv:
    """One unbatched environment as two pure JAX functions (ezv batches, resets and time-limits it).

    reset(key) -> (state, obs)
    step(state, action) -> (state, obs, reward, terminated)

    `action` is an int32 scalar for `Discrete(n)` and a float32 [dim] vector inside [low, high] for `Box`.
    `obs` keeps one shape and dtype: uint8 [H, W, C] is an image (the conv presets, `frame_stack` frames
    stacked by the agent); anything else is a vector the agent reads as float32. `terminated` means a
    terminal state (no bootstrap); the time limit is ezv's (`max_episode_steps`, reported as `truncated`).
    The state must keep its structure, shapes and dtypes (it is a `lax.scan` carry).
    """

    reset: Callable[[jax.Array], tuple[Any, jax.Array]]
    step: Callable[[Any, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]]
    action_space: Discrete | Box
    max_episode_steps: int
    frame_stack: int = 1


@dataclasses.dataclass(frozen=True)
class Registration:
    env_id: str
    factory: Callable[..., Any]
    source: str  # where the factory lives, for messages


_REGISTRY: dict[str, Registration] = {}


def add(env_id: str, factory: Callable[..., Any], overwrite: bool) -> None:
    """Record a registration (`ezv.envs.register` checks the id first)."""
    if env_id in _REGISTRY and not overwrite and _REGISTRY[env_id].factory is not factory:
        raise ValueError(f"{env_id!r} is already registered (by {_REGISTRY[env_id].source}); pass overwrite=True to "
                         "replace it.")
    _REGISTRY[env_id] = Registration(env_id, factory, _describe(factory))


def _describe(factory: Callable) -> str:
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(factory)


def unregister(env_id: str) -> None:
    _REGISTRY.pop(env_id, None)


def registered_ids() -> list[str]:
    return sorted(_REGISTRY)


def lookup(env_id: str) -> Registration | None:
    """The registration of `env_id`; an id of the form `module:attribute` is imported and registered here."""
    if env_id in _REGISTRY:
        return _REGISTRY[env_id]
    if not IMPORT_FORM.match(env_id):
        return None
    module_name, attribute = env_id.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownEnvError(f"env id {env_id!r}: cannot import module {module_name!r} ({type(e).__name__}: {e}). "
                              "The module must be importable from the current directory or an installed package.") \
            from None
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise UnknownEnvError(f"env id {env_id!r}: module {module_name!r} has no attribute {attribute!r}.")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UnknownEnvError(f"env id {env_id!r}: {attribute!r} is a {type(factory).__name__}, not a factory "
                              "(a function returning the env).")
    _REGISTRY[env_id] = Registration(env_id, factory, env_id)
    return _REGISTRY[env_id]


# --- building ------------------------------------------------------------------------------------


def _accepted(factory: Callable) -> tuple[set[str], bool]:
    """(keyword parameters, whether it takes **kwargs)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        return set(), True
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def _call(reg: Registration, options: dict[str, Any]) -> tuple[Any, Callable[[], Any], int | None]:
    """(the factory's env, a way to make one more with the same options, an ezv-side time limit or None).

    Options the factory takes go to it; `evaluation` (every id accepts it) only where the factory names it, and
    `max_episode_steps` is ezv's own time limit unless the factory names it (a `**kwargs` factory gets neither)."""
    names, any_kwargs = _accepted(reg.factory)
    options = dict(options)
    if "evaluation" in options and "evaluation" not in names:
        options.pop("evaluation")
    limit = None
    if "max_episode_steps" in options and "max_episode_steps" not in names:
        limit = options.pop("max_episode_steps")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise EnvOptionError(f"option max_episode_steps must be a positive integer, got {limit!r}.")
    unknown = sorted(set(options) - names) if not any_kwargs else []
    if unknown:
        takes = ", ".join(sorted(names | {"max_episode_steps", "evaluation"}))
        raise EnvOptionError(f"option(s) {', '.join(unknown)} not accepted by {reg.source} (env {reg.env_id!r}). "
                             f"Its options: {takes}.")

    def make_one():
        try:
            return reg.factory(**options)
        except (TypeError, ValueError) as e:
            raise EnvOptionError(f"{reg.env_id}: the factory {reg.source} failed with options {options} "
                                 f"({type(e).__name__}: {e}).") from e

    return make_one(), make_one, limit


def is_gymnasium_env(obj: Any) -> bool:
    try:
        import gymnasium
    except ImportError:
        return False
    return isinstance(obj, gymnasium.Env)


def runs_on_host(env_id: str, options: dict[str, Any]) -> bool:
    """Whether a registered id's env lives on the host (gymnasium): not vmappable, not checkpointable."""
    reg = lookup(env_id)
    if reg is None:
        return False
    env = _call(reg, options)[0]
    if is_gymnasium_env(env):
        env.close()  # built only to look at it
        return True
    return False


def make(env_id: str, num_envs: int, seed: int, options: dict[str, Any]) -> VecEnv:
    """Build `num_envs` batched envs of the registered (or `module:factory`) id `env_id`."""
    reg = lookup(env_id)
    assert reg is not None, env_id
    env, make_one, limit = _call(reg, options)
    plain_options = {**options, "factory": reg.source}
    if is_gymnasium_env(env):
        from ezv.envs.host import make_host_env

        return make_host_env(env_id, env, make_one, num_envs, seed, limit, plain_options)
    spec, single = single_env(env, env_id, limit, plain_options, reg.source)
    return make_vec_env(spec, num_envs, seed, single)


def single_env(env: Any, env_id: str, limit: int | None, options: dict[str, Any],
               source: str) -> tuple[EnvSpec, SingleEnv]:
    """The spec and checked unbatched functions of what a factory returned."""
    if isinstance(env, JaxEnv):
        return _jax_env(env, env_id, limit, options)
    gymnax_env, params = (env if isinstance(env, tuple) and len(env) == 2 else (env, None))
    if all(hasattr(gymnax_env, name) for name in ("reset_env", "step_env", "default_params")):
        from ezv.envs.gymnax_env import adapt

        spec, single = adapt(gymnax_env, params if params is not None else gymnax_env.default_params, env_id, BACKEND,
                             DOMAIN, limit, lift_limit=True, options=options)
        _check_traced(single, spec, f"{source} (a gymnax env)")
        return spec, single
    if all(hasattr(env, name) for name in ("reset", "step", "action_size", "observation_size")):
        from ezv.envs.playground_env import _box_spec, _single_env

        if not isinstance(env.observation_size, int):
            raise EnvContractError(f"{env_id}: observation_size is {env.observation_size!r}; ezv takes one "
                                   "observation array (not a dict of them).")
        spec = _box_spec(env, env_id, BACKEND, DOMAIN, limit or 1000, options)
        single = _single_env(env, 1)
        _check_traced(single, spec, f"{source} (a brax-style env)")
        return spec, single
    raise EnvContractError(
        f"{env_id}: the factory {source} returned a {type(env).__name__}. It must return an ezv.envs.JaxEnv "
        "(reset/step functions), a gymnax env (or (env, params)), a brax/Playground-style env, or a gymnasium.Env.")


def _jax_env(env: JaxEnv, env_id: str, limit: int | None, options: dict[str, Any]) -> tuple[EnvSpec, SingleEnv]:
    where = f"{env_id}"
    _check_space(env.action_space, where)
    max_steps = limit or env.max_episode_steps
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
        raise EnvContractError(f"{where}: max_episode_steps must be a positive integer, got {max_steps!r}.")
    if not isinstance(env.frame_stack, int) or env.frame_stack < 1:
        raise EnvContractError(f"{where}: frame_stack must be a positive integer, got {env.frame_stack!r}.")
    state_struct, obs_struct = _trace_reset(env.reset, where)
    obs_dtype = _agent_obs_dtype(obs_struct)

    def reset(key):
        state, obs = env.reset(key)
        return _strong(state), jnp.asarray(obs).astype(obs_dtype)

    def step(state, action, key):
        del key  # a user's step keeps its own randomness in its state
        new_state, obs, reward, terminated = env.step(state, action)
        new_state = jax.tree.map(lambda new, old: jnp.asarray(new).astype(old.dtype), new_state, state)
        return (new_state, jnp.asarray(obs).astype(obs_dtype), jnp.asarray(reward, jnp.float32),
                jnp.asarray(terminated).astype(bool))

    spec = EnvSpec(env_id=env_id, backend=BACKEND, domain=DOMAIN, obs_shape=tuple(obs_struct.shape),
                   obs_dtype=np.dtype(obs_dtype), action_space=env.action_space, max_episode_steps=int(max_steps),
                   frame_stack=env.frame_stack, options=options)
    _check_step(env.step, state_struct, obs_struct, env.action_space, where)
    return spec, SingleEnv(reset=reset, step=step)


def _strong(tree: Any) -> Any:
    """The same values without weak types (a Python scalar in the state would change type in the scan)."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(jnp.asarray(x), jnp.asarray(x).dtype), tree)


def _agent_obs_dtype(obs: jax.ShapeDtypeStruct) -> Any:
    """uint8 [H, W, C] stays an image; everything else is read as float32."""
    return jnp.uint8 if (len(obs.shape) == 3 and obs.dtype == jnp.uint8) else jnp.float32


# --- checks -------------------------------------------------------------------------------------


def _check_space(space: Any, where: str) -> None:
    if isinstance(space, Discrete):
        if not isinstance(space.n, (int, np.integer)) or space.n < 1:
            raise EnvContractError(f"{where}: Discrete(n) needs n >= 1, got {space.n!r}.")
        return
    if isinstance(space, Box):
        if len(space.low) != space.dim or len(space.high) != space.dim:
            raise EnvContractError(f"{where}: Box(dim={space.dim}) needs {space.dim} low and high bounds, got "
                                   f"{len(space.low)} and {len(space.high)}.")
        low, high = np.asarray(space.low, float), np.asarray(space.high, float)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise EnvContractError(f"{where}: Box bounds must be finite with low < high (the agent's actions are "
                                   f"squashed into them), got low={space.low}, high={space.high}.")
        return
    raise EnvContractError(f"{where}: action_space must be ezv.envs.Discrete(n) or ezv.envs.Box(dim, low, high), got "
                           f"{type(space).__name__}.")


def _kind(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{np.dtype(x.dtype).name}{list(x.shape)}"
    return type(x).__name__


def _traced(fn: Callable, where: str, call: str, *args: Any) -> Any:
    """`jax.eval_shape(fn, *args)`, with a user's error turned into one that says where and why."""
    try:
        return jax.eval_shape(fn, *args)
    except EnvContractError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of user code while tracing
        if isinstance(e, TypeError) and "not a valid JAX type" in str(e):
            raise EnvContractError(f"{where}: {call} must return JAX arrays (pytrees of arrays: no strings, lists of "
                                   f"Python objects or None leaves where arrays belong). JAX says: {e}") from None
        raise EnvContractError(
            f"{where}: {call} failed when traced with abstract arrays ({type(e).__name__}: {e}). ezv runs it under "
            "jax.jit: it must be pure JAX (jnp, not numpy, on its inputs; jax.lax.cond/select, not Python `if`, on "
            "traced values).") from e


def _trace_reset(reset: Callable, where: str) -> tuple[Any, jax.ShapeDtypeStruct]:
    def call(key):
        out = reset(key)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise EnvContractError(f"{where}: reset(key) must return (state, obs); it returned "
                                   f"{_kind(out) if not isinstance(out, tuple) else f'a {len(out)}-tuple'}.")
        return out

    state, obs = _traced(call, where, "reset(key)", jax.random.PRNGKey(0))
    if not hasattr(obs, "shape"):
        raise EnvContractError(f"{where}: reset(key)'s obs must be one array, got a {type(obs).__name__} "
                               "(flatten dict or tuple observations into one array).")
    if np.dtype(obs.dtype) not in (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float16),
                                   np.dtype(np.bool_)) and not np.issubdtype(obs.dtype, np.integer):
        raise EnvContractError(f"{where}: obs dtype {np.dtype(obs.dtype).name} is not supported (use float32, or "
                               "uint8 for images).")
    return state, obs


def _action_struct(space: Discrete | Box) -> jax.ShapeDtypeStruct:
    return (jax.ShapeDtypeStruct((), jnp.int32) if isinstance(space, Discrete)
            else jax.ShapeDtypeStruct((space.dim,), jnp.float32))


def _check_step(step: Callable, state: Any, obs: jax.ShapeDtypeStruct, space: Any, where: str) -> None:
    def call(state, action):
        out = step(state, action)
        if not (isinstance(out, tuple) and len(out) == 4):
            got = f"a {len(out)}-tuple" if isinstance(out, tuple) else _kind(out)
            raise EnvContractError(f"{where}: step(state, action) must return (state, obs, reward, terminated); it "
                                   f"returned {got}.")
        return out

    action = _action_struct(space)
    new_state, new_obs, reward, terminated = _traced(call, where, f"step(state, action: {_kind(action)})", state,
                                                     action)
    if not hasattr(new_obs, "shape") or (tuple(new_obs.shape), new_obs.dtype) != (tuple(obs.shape), obs.dtype):
        raise EnvContractError(f"{where}: step's obs is {_kind(new_obs)} but reset's is {_kind(obs)}; both must "
                               "return the same shape and dtype.")
    for name, value in (("reward", reward), ("terminated", terminated)):
        if not hasattr(value, "shape") or tuple(value.shape) != ():
            raise EnvContractError(f"{where}: step's {name} must be a scalar (shape ()), got {_kind(value)} "
                                   "(ezv batches the env itself).")
    _same_state(state, new_state, where)


def _same_state(before: Any, after: Any, where: str) -> None:
    flat_before, tree_before = jax.tree_util.tree_flatten_with_path(before)
    flat_after, tree_after = jax.tree_util.tree_flatten_with_path(after)
    if tree_before != tree_after:
        raise EnvContractError(f"{where}: step returns a state of another structure than reset's ({tree_after} vs "
                               f"{tree_before}); the state is a lax.scan carry and must keep its structure.")
    for (path, a), (_, b) in zip(flat_before, flat_after):
        if tuple(a.shape) != tuple(b.shape):
            raise EnvContractError(f"{where}: state leaf state{jax.tree_util.keystr(path)} is {_kind(a)} after reset "
                                   f"but {_kind(b)} after step; the state must keep its shapes (a lax.scan carry).")


def _check_traced(single: SingleEnv, spec: EnvSpec, where: str) -> None:
    """Trace a wrapped third-party env's functions once, so that a broken one fails here, by name."""
    state, obs = _traced(single.reset, where, "reset", jax.random.PRNGKey(0))
    action = _action_struct(spec.action_space)
    out = _traced(single.step, where, "step", state, action, jax.random.PRNGKey(0))
    if tuple(out[1].shape) != tuple(obs.shape):
        raise EnvContractError(f"{where}: step's obs is {_kind(out[1])} but reset's is {_kind(obs)}.")
