"""ezv: EfficientZero V2 in JAX as one jit-compiled program."""

__version__ = "0.1.0"


def load_agent(path: str):
    """The trained agent in a file written by `python -m ezv.export`; `agent.act(obs, key)` runs
    the evaluation search and returns env actions (see `ezv.inference`)."""
    from ezv.inference import load_agent as _load

    return _load(path)
