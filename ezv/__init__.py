"""ezv: EfficientZero V2 in JAX as one jit-compiled program."""

__version__ = "0.1.0"
