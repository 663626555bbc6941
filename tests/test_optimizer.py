"""The learner's optimiser (`make_optimizer`, reference §5): global-norm clipping, coupled L2 weight decay,
SGD with heavy-ball momentum or Adam, and the learning-rate schedule (linear warm-up from 0 over
`warmup_fraction` of all updates, then ×`lr_decay_rate` every `lr_decay_updates` updates, as a staircase).

The effective learning rate of update i is read off the update itself: with momentum 0 and no weight decay,
SGD moves a parameter by −lr_i·g, and Adam by −lr_i·g/|g| under a constant gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ezv.config import Config, LearnerConfig
from ezv.learner import make_optimizer


def config(num_updates=1000, **learner):
    """A run of exactly `num_updates` updates (4 envs, one update per env step, no offline phase)."""
    cfg = Config(total_env_steps=num_updates, learning_starts=0, num_envs=4, replay_ratio=1.0, offline_updates=0,
                 learner=LearnerConfig(**learner))
    assert cfg.total_updates == num_updates
    return cfg


def effective_learning_rates(cfg, steps):
    """[steps] the step size of each update on a scalar parameter under the constant gradient 1."""
    opt = make_optimizer(cfg)
    params = {"w": jnp.zeros(())}

    def step(state, _):
        updates, state = opt.update({"w": jnp.ones(())}, state, params)
        return state, -updates["w"]

    return np.asarray(jax.jit(lambda s: jax.lax.scan(step, s, None, length=steps)[1])(opt.init(params)))


SCHEDULE = dict(learning_rate=0.2, momentum=0.0, weight_decay=0.0, max_grad_norm=1e9, warmup_fraction=0.1,
                lr_decay_updates=200, lr_decay_rate=0.5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_learning_rate_warms_up_linearly_from_zero_over_the_warmup_fraction_of_all_updates(optimizer):
    lr = effective_learning_rates(config(1000, optimizer=optimizer, **SCHEDULE), 120)
    # 10% of 1000 updates = 100 warm-up updates: update i uses 0.2·i/100.
    np.testing.assert_allclose(lr[:100], 0.2 * np.arange(100) / 100, rtol=1e-5, atol=1e-7)
    assert lr[0] == 0.0
    assert lr[50] == pytest.approx(0.1, rel=1e-5)
    np.testing.assert_allclose(lr[100:], 0.2, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_learning_rate_then_decays_by_the_rate_every_decay_interval_as_a_staircase(optimizer):
    lr = effective_learning_rates(config(1000, optimizer=optimizer, **SCHEDULE), 800)
    # After the 100 warm-up updates: 0.2 for 200 updates, then 0.1, 0.05, 0.025 (counted from the warm-up's end).
    i = np.arange(100, 800)
    np.testing.assert_allclose(lr[100:], 0.2 * 0.5 ** ((i - 100) // 200), rtol=1e-5)
    assert lr[299] == pytest.approx(0.2, rel=1e-5) and lr[300] == pytest.approx(0.1, rel=1e-5)
    assert lr[499] == pytest.approx(0.1, rel=1e-5) and lr[500] == pytest.approx(0.05, rel=1e-5)
    assert lr[700] == pytest.approx(0.025, rel=1e-5)


def test_the_warmup_length_follows_the_number_of_updates_of_the_run():
    # 2000 env steps, learning from step 400 with 8 envs: 200 learning iterations of 0.5 x 8 = 4 updates.
    cfg = Config(total_env_steps=2000, learning_starts=400, num_envs=8, replay_ratio=0.5, offline_updates=0,
                 learner=LearnerConfig(**dict(SCHEDULE, warmup_fraction=0.05)))
    assert cfg.total_updates == 800
    lr = effective_learning_rates(cfg, 60)
    # 5% of 800 = 40 warm-up updates.
    np.testing.assert_allclose(lr[:40], 0.2 * np.arange(40) / 40, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lr[40:], 0.2, rtol=1e-5)


def test_without_warmup_the_first_update_uses_the_full_learning_rate():
    lr = effective_learning_rates(config(1000, **dict(SCHEDULE, warmup_fraction=0.0)), 210)
    np.testing.assert_allclose(lr[:200], 0.2, rtol=1e-5)
    np.testing.assert_allclose(lr[200:], 0.1, rtol=1e-5)


def first_update(cfg, grads, params):
    opt = make_optimizer(cfg)
    updates, _ = opt.update(grads, opt.init(params), params)
    return updates


def test_gradients_are_clipped_to_the_max_global_norm_over_all_parameters():
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5 (each leaf alone is smaller)
    params = jax.tree.map(jnp.zeros_like, grads)
    base = dict(SCHEDULE, warmup_fraction=0.0, learning_rate=0.1)
    clipped = first_update(config(**dict(base, max_grad_norm=1.0)), grads, params)
    np.testing.assert_allclose(clipped["a"], [-0.1 * 3 / 5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [[-0.1 * 4 / 5]], rtol=1e-6)
    unclipped = first_update(config(**dict(base, max_grad_norm=10.0)), grads, params)
    np.testing.assert_allclose(unclipped["a"], [-0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(unclipped["b"], [[-0.4]], rtol=1e-6)


def test_weight_decay_is_coupled_l2_added_after_clipping_and_carried_by_the_momentum():
    lr, wd = 0.1, 0.01
    cfg = config(**dict(SCHEDULE, warmup_fraction=0.0, learning_rate=lr, momentum=0.9, weight_decay=wd,
                        max_grad_norm=1.0))
    opt = make_optimizer(cfg)
    params, grads = {"w": jnp.array([10.0])}, {"w": jnp.array([100.0])}
    state = opt.init(params)
    first, state = opt.update(grads, state, params)
    second, _ = opt.update(grads, state, params)
    # The gradient is clipped to norm 1, then wd·w = 0.1 is added unclipped: d = 1.1 (clipping after the decay
    # would give 1.0). Heavy-ball momentum then carries the whole d: 1.1, then 1.1 + 0.9·1.1 (a decoupled
    # decay, outside the momentum, would give 1.9 + 0.1 = 2.0).
    np.testing.assert_allclose(first["w"], [-lr * 1.1], rtol=1e-5)
    np.testing.assert_allclose(second["w"], [-lr * 1.1 * 1.9], rtol=1e-5)


def test_sgd_momentum_accumulates_as_pytorch_heavy_ball():
    lr = effective_learning_rates(config(**dict(SCHEDULE, warmup_fraction=0.0, momentum=0.9)), 3)
    # buf ← 0.9·buf + g; step = lr·buf: 0.2·(1, 1.9, 2.71).
    np.testing.assert_allclose(lr, 0.2 * np.array([1.0, 1.9, 2.71]), rtol=1e-5)


def test_adam_weight_decay_goes_through_the_adaptive_step_not_adamw():
    lr, wd = 0.01, 0.01
    cfg = config(**dict(SCHEDULE, optimizer="adam", warmup_fraction=0.0, learning_rate=lr, weight_decay=wd))
    params = {"w": jnp.array([2.0, -3.0])}
    update = first_update(cfg, {"w": jnp.zeros(2)}, params)
    # With a zero gradient the L2 term wd·w is all Adam sees: its first step is lr·sign(wd·w)
    # (AdamW would move by lr·wd·w = 2e-4 and 3e-4 instead).
    np.testing.assert_allclose(update["w"], [-lr, lr], rtol=1e-5)


def test_no_weight_decay_leaves_parameters_without_gradient_unchanged():
    cfg = config(**dict(SCHEDULE, warmup_fraction=0.0, weight_decay=0.0))
    update = first_update(cfg, {"w": jnp.zeros(2)}, {"w": jnp.array([2.0, -3.0])})
    np.testing.assert_array_equal(update["w"], 0.0)


def test_reference_defaults_are_sgd_0_2_momentum_0_9_coupled_decay_1e_4_clip_5():
    learner = LearnerConfig()
    assert (learner.optimizer, learner.learning_rate, learner.momentum) == ("sgd", 0.2, 0.9)
    assert (learner.weight_decay, learner.max_grad_norm, learner.warmup_fraction) == (1e-4, 5.0, 0.01)
    assert (learner.lr_decay_updates, learner.lr_decay_rate) == (100_000, 0.1)
