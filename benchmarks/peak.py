"""The device's measured matmul peak: the denominator of the ceiling analysis.

    python -m benchmarks peak [--quick] [--json out.json]

Times square matmuls (float32 at JAX's default precision, and bfloat16 on accelerators) at
a few sizes inside one jitted function that chains 8 of them, and reports the best rate. A
vendor's datasheet figure is not what XLA reaches: the fraction of peak that the training
loop achieves is taken against this measured number.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.common import print_table, save_json, time_compiled

CHAIN = 8  # matmuls per call, so that dispatch overhead does not count


def matmul_rate(n: int, dtype) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, best of 5 after compiling."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = (jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32) / jnp.sqrt(n)).astype(dtype)

    @jax.jit
    def chain(x, w):
        for _ in range(CHAIN):
            x = x @ w
        return x

    _, seconds = time_compiled(chain, a, b, repeats=5)
    return CHAIN * 2 * n**3 / seconds


def measure(quick: bool = False) -> list[dict]:
    # `quick` changes nothing: the peak takes seconds, and a single small size on a shared CPU
    # measured half the rate of the full run once, which doubled every "% of peak".
    del quick
    accelerator = jax.default_backend() != "cpu"
    sizes = [4096, 8192] if accelerator else [1024, 2048]
    dtypes = [jnp.float32, jnp.bfloat16] if accelerator else [jnp.float32]
    rows = []
    for dtype in dtypes:
        rates = {n: matmul_rate(n, dtype) for n in sizes}
        best = max(rates, key=rates.get)
        rows.append(dict(dtype=jnp.dtype(dtype).name, size=best, tflops=rates[best] / 1e12,
                         by_size={str(n): r / 1e12 for n, r in rates.items()}))
    return rows


def peak_flops(rows: list[dict], dtype: str = "float32") -> float:
    """FLOP/s of the measured peak for `dtype` (the loop computes in float32)."""
    return next(r["tflops"] for r in rows if r["dtype"] == dtype) * 1e12


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peak", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = measure(args.quick)
    print_table(f"Measured matmul peak on {jax.devices()[0].device_kind}", rows, ["dtype", "size", "tflops"])
    save_json(args.json, "peak", rows)
    return rows


if __name__ == "__main__":
    main()
