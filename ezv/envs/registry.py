"""Route an env id, as the user types it, to its backend; validate options before anything compiles."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable

from ezv.envs.core import VecEnv
from ezv.envs.errors import EnvOptionError, UnknownEnvError

BACKENDS = {
    "envpool-atari": "every Atari '*-v5' id, e.g. Breakout-v5, Pong-v5",
    "envpool-dmc": "DeepMind Control '*-v1' ids, e.g. CheetahRun-v1, WalkerWalk-v1",
    "envpool-dmc-pixels": "DeepMind Control from pixels 'pixels/<DMC id>', e.g. pixels/CheetahRun-v1",
    "playground": "MuJoCo Playground DM Control Suite 'dmc/<Task>', e.g. dmc/CheetahRun, dmc/CartpoleBalance",
    "gymnax": "gymnax ids, e.g. CartPole-v1, Acrobot-v1, Pendulum-v1, Breakout-MinAtar, Catch-bsuite",
    "brax": "brax 'brax/<env>', e.g. brax/ant, brax/halfcheetah",
    "custom": "your own env: an id given to ezv.envs.register, or 'module.path:factory' (README, 'Your own "
              "environment')",
}


@dataclasses.dataclass(frozen=True)
class Route:
    backend: str
    options_cls: type
    build: Callable[..., VecEnv]


@functools.cache
def _gymnax_ids() -> frozenset[str]:
    from ezv.envs import gymnax_env

    return frozenset(gymnax_env.known_ids())


@functools.cache
def _envpool_ids(family: str) -> frozenset[str]:
    from ezv.envs import envpool_env

    return frozenset(envpool_env.known_ids(family))


@functools.cache
def _playground_ids() -> frozenset[str]:
    from ezv.envs import playground_env

    return frozenset(playground_env.playground_known_ids())


@functools.cache
def _brax_ids() -> frozenset[str]:
    from ezv.envs import playground_env

    return frozenset(playground_env.brax_known_ids())


def _route(env_id: str) -> Route | None:
    route = _builtin_route(env_id)
    if route is not None:
        return route
    from ezv.envs import custom

    if custom.lookup(env_id) is not None:
        return Route("custom", dict, custom.make)
    return None


def register(env_id: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Make `env_id` build the env `factory(**options)` returns (`ezv.envs.custom` says what it may return).

    The id then works wherever a built-in id does, in this process. A run started from Python under a
    registered id is resumed or evaluated from the CLI only where the id is registered again; the
    `module:factory` id form needs no registration and is what to use for runs driven from the CLI."""
    from ezv.envs import custom

    if not isinstance(env_id, str) or not env_id.strip() or env_id != env_id.strip():
        raise ValueError(f"env id must be a non-empty string without surrounding spaces, got {env_id!r}.")
    if not callable(factory):
        raise TypeError(f"register({env_id!r}, ...): the factory must be callable (it builds the env from its "
                        f"options), got {type(factory).__name__}.")
    if builtin_backend(env_id) is not None:
        raise ValueError(f"{env_id!r} is a built-in id ({builtin_backend(env_id)} backend); register yours under "
                         "another name.")
    custom.add(env_id, factory, overwrite)


def builtin_backend(env_id: str) -> str | None:
    """The backend of a built-in id, None for any other (a user's id may not shadow a built-in one)."""
    route = _builtin_route(env_id)
    return None if route is None else route.backend


def _builtin_route(env_id: str) -> Route | None:
    # Prefixes first (cheap), then gymnax before envpool: both know CartPole-v1, and the
    # issue's contract routes the classic-control ids to gymnax.
    if env_id.startswith("dmc/"):
        if env_id in _playground_ids():
            from ezv.envs import playground_env as m

            return Route("playground", m.PlaygroundOptions, m.make_playground)
        return None
    if env_id.startswith("pixels/"):
        from ezv.envs import envpool_env as m

        if env_id.removeprefix(m.PIXELS_PREFIX) in _envpool_ids(m.DMC_FAMILY):
            return Route("envpool-dmc-pixels", m.DMCPixelOptions, m.make_dmc_pixels)
        return None
    if env_id.startswith("brax/"):
        if env_id in _brax_ids():
            from ezv.envs import playground_env as m

            return Route("brax", m.BraxOptions, m.make_brax)
        return None
    if env_id in _gymnax_ids():
        from ezv.envs import gymnax_env as m

        return Route("gymnax", m.GymnaxOptions, m.make)
    from ezv.envs import envpool_env as m

    if env_id in _envpool_ids(m.ATARI_FAMILY):
        return Route("envpool-atari", m.AtariOptions, m.make_atari)
    if env_id in _envpool_ids(m.DMC_FAMILY):
        return Route("envpool-dmc", m.DMCOptions, m.make_dmc)
    return None


def known_env_ids() -> list[str]:
    """Every id `make` accepts, over all backends."""
    from ezv.envs import envpool_env as m

    ids = set(_gymnax_ids()) | _playground_ids() | _brax_ids()
    ids |= _envpool_ids(m.ATARI_FAMILY) | _envpool_ids(m.DMC_FAMILY)
    ids |= {m.PIXELS_PREFIX + i for i in _envpool_ids(m.DMC_FAMILY)}
    from ezv.envs import custom

    return sorted(ids | set(custom.registered_ids()))


def backend_of(env_id: str) -> str:
    """The backend name for `env_id`; raises UnknownEnvError with close matches."""
    route = _route(env_id)
    if route is None:
        raise UnknownEnvError(_unknown_message(env_id))
    return route.backend


def domain_of(env_id: str) -> str:
    """The domain (`atari`, `dmc`, `dmc_pixels`, `classic`, `minatar`, `bsuite`, `misc`, `brax`) without
    building the env."""
    backend = backend_of(env_id)
    if backend == "gymnax":
        from ezv.envs.gymnax_env import gymnax_domain

        return gymnax_domain(env_id)
    return {"envpool-atari": "atari", "envpool-dmc": "dmc", "envpool-dmc-pixels": "dmc_pixels", "playground": "dmc",
            "brax": "brax", "custom": "custom"}[backend]


def has_continuous_actions(env_id: str) -> bool:
    """Whether `env_id` takes a continuous action vector, without building a batched env."""
    backend = backend_of(env_id)
    if backend == "gymnax":
        from ezv.envs.gymnax_env import has_continuous_actions as gymnax_continuous

        return gymnax_continuous(env_id)
    if backend == "custom":
        return not spec_of(env_id).discrete
    return backend != "envpool-atari"


def spec_of(env_id: str, **options: Any):
    """The `EnvSpec` of `env_id` with these options (builds one env)."""
    return make(env_id, 1, 0, **options).spec


def runs_on_host(env_id: str, **options: Any) -> bool:
    """Whether the env's state lives outside JAX (envpool, gymnasium): such envs are not vmapped over seeds
    (the seeds share one pool), not split over devices, and restart from fresh episodes on resume."""
    backend = backend_of(env_id)
    if backend == "custom":
        from ezv.envs import custom

        return custom.runs_on_host(env_id, options)
    return backend.startswith("envpool")


def _unknown_message(env_id: str) -> str:
    ids = known_env_ids()
    by_lower = {i.lower(): i for i in ids}
    close = difflib.get_close_matches(env_id.lower(), list(by_lower), n=5, cutoff=0.5)
    suggestion = ", ".join(by_lower[c] for c in close) if close else "none"
    backends = "\n".join(f"  {name}: {what}" for name, what in BACKENDS.items())
    return f"unknown env id {env_id!r}. Closest known ids: {suggestion}.\nBackends and their ids:\n{backends}"


def make(env_id: str, num_envs: int = 1, seed: int = 0, **options: Any) -> VecEnv:
    """Build `num_envs` batched, pure-functional envs for `env_id` (see `ezv.envs.core`).

    `options` are the backend's options (its `*Options` dataclass fields). `evaluation=True`
    is accepted by every backend: it selects the domain's evaluation protocol where one
    exists (Atari: raw rewards, no episodic life, 27000-step cap) and changes nothing elsewhere.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    route = _route(env_id)
    if route is None:
        raise UnknownEnvError(_unknown_message(env_id))
    if route.backend == "custom":  # its options are the factory's keyword arguments
        return route.build(env_id, num_envs, seed, options)
    fields = {f.name for f in dataclasses.fields(route.options_cls)}
    if "evaluation" not in fields:
        options.pop("evaluation", None)
    unknown = sorted(set(options) - fields)
    if unknown:
        valid = ", ".join(sorted(fields | {"evaluation"}))
        raise EnvOptionError(
            f"option(s) {', '.join(unknown)} not supported by the {route.backend} backend "
            f"(env {env_id!r}). Its options: {valid}."
        )
    try:
        return route.build(env_id, num_envs, seed, route.options_cls(**options))
    except ValueError as e:
        if isinstance(e, (UnknownEnvError, EnvOptionError)):
            raise
        raise EnvOptionError(f"{env_id}: {e}") from e
