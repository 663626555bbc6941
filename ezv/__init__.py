"""ezv: EfficientZero V2 in JAX as one jit-compiled program.

The documented surface (everything else is internal and may change):

    ezv.Agent            a run from Python: create (env id + preset + overrides, a run dir, agent files),
                         train, evaluate, act, record, export, best, metrics (`ezv.api`)
    ezv.make_config      the `Config` the CLI would run for an env id, preset and overrides
    ezv.Config           every field of a run (`python -m ezv.train --help` lists them as flags)
    ezv.load_agent       an exported agent file, for inference (`ezv.inference.LoadedAgent.act`)
    ezv.Evaluation, ezv.TrainSummary, ezv.MetricsTable   what Agent's methods return
    ezv.envs             environments: `make`, `register` your own, `JaxEnv`, `check_env`, the spec types
    ezv.distributed      several processes (hosts) on one run: `initialize(Launch(...))` before anything else

and the command-line tools `python -m ezv.train | ezv.evaluate | ezv.export | ezv.plot`.
"""

__version__ = "0.1.0"

__all__ = ["Agent", "Config", "Evaluation", "MetricsTable", "TrainSummary", "distributed", "envs", "load_agent",
           "make_config"]

# Imported on first use, so that `import ezv` stays cheap (no JAX until something needs it).
_LAZY = {"Agent": "ezv.api", "Evaluation": "ezv.api", "MetricsTable": "ezv.api", "TrainSummary": "ezv.api",
         "Config": "ezv.config", "make_config": "ezv.config"}


def load_agent(path: str):
    """The trained agent in a file written by `python -m ezv.export` (or `Agent.export`); `agent.act(obs, key)`
    runs the evaluation search and returns env actions (see `ezv.inference`)."""
    from ezv.inference import load_agent as _load

    return _load(path)


def __getattr__(name: str):
    import importlib

    if name in ("envs", "distributed"):
        return importlib.import_module(f"ezv.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ezv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
