"""The EZ-V2 networks' parameters: PyTorch's default initialisation as an option."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ezv.config import load_preset
from ezv.networks import EZNet, initial_lstm_carry, torch_default_init
from tiny import tiny_pixel_network


def _tiny_atari_network():
    """The `atari` preset's conv network, 8 channels wide."""
    return dataclasses.replace(load_preset("atari").network, channels=8, reduced_channels=4, lstm_hidden=16,
                               projection_hidden=16, projection_dim=16, predictor_hidden=8)


def test_torch_init_draws_uniform_fan_in_weights_and_biases_and_keeps_zero_heads_zero():
    cfg = dataclasses.replace(load_preset("dmc_state").network, latent_dim=32, mlp_hidden=64, mlp_head_hidden=(64,),
                              projection_hidden=64, projection_dim=32, predictor_hidden=64)
    net = EZNet(cfg, num_actions=None, action_dim=3)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)), jnp.zeros((1, 3)))["params"]
    torch = torch_default_init(params, jax.random.PRNGKey(1))
    assert jax.tree.structure(torch) == jax.tree.structure(params)
    flat, flat_torch = flax.traverse_util.flatten_dict(params), flax.traverse_util.flatten_dict(torch)
    dense = [p for p in flat if p[-1] == "kernel"]
    zero_heads = [p for p in dense if not np.any(flat[p])]
    assert zero_heads, "the policy and reward output layers start at zero"
    for path in dense:
        kernel, bias = np.asarray(flat_torch[path]), np.asarray(flat_torch[path[:-1] + ("bias",)])
        if path in zero_heads:
            assert not kernel.any() and not bias.any(), path
            continue
        bound = 1 / np.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, path
        if kernel.size >= 1000:  # U(±b) has std b/√3; flax's lecun_normal has std b, √3x larger
            assert abs(kernel.std() - bound / np.sqrt(3)) < 0.1 * bound, path
            assert abs(np.asarray(flat[path]).std() - bound) < 0.15 * bound, path
        assert bias.any(), path  # flax's biases start at zero, PyTorch's do not
    for path in flat:  # LayerNorm scales and offsets are the same in both libraries
        if path[-1] in ("scale",) or (path[-1] == "bias" and path[:-1] + ("kernel",) not in flat):
            np.testing.assert_array_equal(flat_torch[path], flat[path])


def test_torch_init_draws_the_value_prefix_lstm_uniform_in_one_over_root_hidden():
    net = EZNet(_tiny_atari_network(), num_actions=4)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 12), jnp.uint8), jnp.zeros((1,), jnp.int32))
    flat = flax.traverse_util.flatten_dict(torch_default_init(params["params"], jax.random.PRNGKey(1)))
    lstm = {p: v for p, v in flat.items() if any("LSTM" in name for name in p)}
    assert lstm and any(p[-1] == "bias" for p in lstm)
    bound = 1 / np.sqrt(16)
    for path, value in lstm.items():
        assert np.abs(value).max() <= bound and np.asarray(value).std() > 0.3 * bound, path


def _next_states(net, params, state, actions):
    return [np.asarray(net.apply(params, state, a, method=EZNet.next_state)) for a in actions]


def test_the_action_embedding_tells_every_action_apart_at_initialisation():
    # EZ-V2 embeds the action by a linear layer (conv1x1 on an action plane, or Dense) and a LayerNorm. With a zero
    # bias the LayerNorm would divide the action's scale out: a/|A| planes of Atari actions 1..|A|-1 would all embed
    # alike, a one-dimensional continuous action would keep only its sign. PyTorch's nonzero bias keeps them apart.
    net = EZNet(_tiny_atari_network(), num_actions=6)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 12), jnp.uint8), jnp.zeros((1,), jnp.int32))
    state = net.apply(params, jnp.full((1, 96, 96, 12), 100, jnp.uint8), method=EZNet.represent)
    after = _next_states(net, params, state, [jnp.array([a]) for a in range(6)])
    for a in range(6):
        for b in range(a):
            assert np.abs(after[a] - after[b]).max() > 1e-3, (a, b)

    pixels = tiny_pixel_network()
    net = EZNet(pixels, num_actions=None, action_dim=1)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 12), jnp.uint8), jnp.zeros((1, 1)))
    state = net.apply(params, jnp.full((1, 64, 64, 12), 100, jnp.uint8), method=EZNet.represent)
    small, large = _next_states(net, params, state, [jnp.array([[0.2]]), jnp.array([[0.9]])])
    assert np.abs(small - large).max() > 1e-3

    net = EZNet(load_preset("control").network, num_actions=None, action_dim=1)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), jnp.zeros((1, 1)))
    state = net.apply(params, jnp.ones((1, 5)), method=EZNet.represent)
    small, large = _next_states(net, params, state, [jnp.array([[0.2]]), jnp.array([[0.9]])])
    assert np.abs(small - large).max() > 1e-3


def test_state_norm_scales_every_real_and_predicted_latent_to_the_unit_range_per_sample():
    # MuZero's and EZ-V1's option: the real latent s_0 and the dynamics' s_1..s_K live on one scale, so the
    # BatchNorm statistics they share (acting and reanalysis run on running averages) hold for both.
    cfg = dataclasses.replace(tiny_pixel_network(), state_norm=True)
    net = EZNet(cfg, num_actions=None, action_dim=1)
    obs = jax.random.randint(jax.random.PRNGKey(1), (3, 64, 64, 12), 0, 256).astype(jnp.uint8)
    params = net.init(jax.random.PRNGKey(0), obs[:1], jnp.zeros((1, 1)))
    state = net.apply(params, obs, method=EZNet.represent)
    latents = [state] + [net.apply(params, state, jnp.full((3, 1), a), method=EZNet.next_state) for a in (-0.5, 0.7)]
    carry = initial_lstm_carry(cfg, 3)
    latents.append(net.apply(params, latents[-1], jnp.full((3, 1), 0.2), carry, method=EZNet.dynamics)[0])
    for latent in latents:
        flat = np.asarray(latent).reshape(3, -1)
        np.testing.assert_allclose(flat.min(1), 0.0, atol=1e-6)
        np.testing.assert_allclose(flat.max(1), 1.0, atol=1e-5)

    raw = EZNet(tiny_pixel_network(), num_actions=None, action_dim=1)  # EZ-V2: off, the trunk's own scale
    peaks = np.asarray(raw.apply(params, obs, method=EZNet.represent)).reshape(3, -1).max(1)
    assert np.abs(peaks - 1.0).min() > 0.1
