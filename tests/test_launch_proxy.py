"""The GPU launch proxy (`python -m benchmarks launches`) counts what it claims to count."""

import jax
import jax.numpy as jnp

from benchmarks.launches import count_launches


def step(x):
    return jnp.tanh(x @ x) + jnp.sin(x).sum()


def test_a_loop_with_a_data_dependent_trip_count_costs_one_host_sync_per_condition_evaluation():
    def loop(x, n):
        return jax.lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, step(c[1])), (0, x))[1]

    counts = count_launches(loop, jnp.ones((8, 8)), 7)
    assert counts["syncs"] == 8  # 7 iterations and the evaluation that ends the loop
    assert counts["loops"] == 1 and counts["kernels"] >= 7 * 2


def test_a_loop_of_known_trip_count_costs_no_host_sync_and_kernels_scale_with_its_length():
    def loop(x, n):
        return jax.lax.fori_loop(0, n, lambda i, x: step(x), x)

    short = count_launches(lambda x: loop(x, 4), jnp.ones((8, 8)))
    long = count_launches(lambda x: loop(x, 8), jnp.ones((8, 8)))
    assert short["syncs"] == long["syncs"] == 0
    assert long["kernels"] > short["kernels"]
