"""Compiled entry points of one `CompiledAgent` for tests (production compiles through `ezv.program.Program`)."""

import functools

import jax


@functools.lru_cache(maxsize=None)
def train_chunk(agent):
    """state -> (state, metrics): one chunk from the state's own acting step, the state donated."""
    return jax.jit(lambda state: agent.chunk(state, state.iteration), donate_argnums=0)


@functools.lru_cache(maxsize=None)
def evaluate_episodes(agent):
    """(params, batch_stats, key) -> one greedy episode per eval env."""
    return jax.jit(agent.evaluate_episodes)


@functools.lru_cache(maxsize=None)
def learn_once(agent):
    """state -> (state, metrics of the one update): sample, reanalyse, gradient step, priorities."""
    def learn(state):
        state, metrics = agent.learner.learn_group(state, 1)
        return state, jax.tree.map(lambda x: x[0], metrics)

    return jax.jit(learn)
