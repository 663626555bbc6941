"""EfficientZero V2 networks in flax (reference §2).

`EZNet` bundles representation h(o) -> s, dynamics g(s, a) -> s', the reward head (a value
prefix LSTM reset every `lstm_horizon` steps, or a per-step reward), prediction
f(s) -> (policy logits, value logits), and the SimSiam projector/predictor.

Two families, chosen by `NetworkConfig.architecture`:
- "conv": the Atari network of §2.1 (96x96 stacked frames -> C x 6 x 6 latent).
- "mlp": the §2.3 blocks for vector observations (pre-LN residual MLP blocks, running
  observation normalisation), with a discrete or continuous action input.

Normalisation statistics (BatchNorm running averages, the observation RunningNorm) live in
the `batch_stats` collection and are updated only when `train=True`, as the reference runs
its models in train mode inside the learner and in eval mode for acting and reanalysis.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ezv.config import NetworkConfig
from ezv.conv import conv_general_dilated

# PyTorch's BatchNorm momentum 0.1 is flax's 0.9 (weight of the old running average).
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
# Every conv of the networks: gradients that XLA:CPU runs fast inside the training loop (ezv/conv.py).
ConvWithBias = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
Conv = functools.partial(ConvWithBias, use_bias=False)


def compute_dtype(cfg: NetworkConfig) -> Any:
    """The dtype of activations and of the inputs of matmuls and convolutions (parameters, their
    gradients and the optimiser stay float32; normalisation statistics, the value-prefix LSTM,
    logits, supports and losses are float32 in both). None: float32, flax's default."""
    return jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else None


def action_embedding_bias(fan_in: int) -> Callable:
    """The bias of the action embedding's linear layer: PyTorch's U(±1/√fan_in), never zero. The embedding is a
    linear layer and a LayerNorm; with flax's zero bias the LayerNorm divides the action's scale out, so
    the a/|A| plane of every Atari action but 0 would embed alike, and a one-dimensional continuous action
    would keep only its sign, until the bias had learned its way off zero. The reference's layers start
    with PyTorch's bias, which keeps every action apart from the first update."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def min_max_normalized(state: jax.Array) -> jax.Array:
    """Each sample's latent scaled to [0, 1] by its own min and max (MuZero's hidden-state scaling); the
    range is floored at 1e-5 so a constant latent does not divide by zero (EZ-V1 adds 1e-5 to a range
    below that instead: the same to within 1e-5)."""
    axes = tuple(range(1, state.ndim))
    low, high = state.min(axes, keepdims=True), state.max(axes, keepdims=True)
    return (state - low) / jnp.maximum(high - low, 1e-5)


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """Identity forward; multiplies the gradient by `scale` (MuZero's 0.5 on unrolled latents)."""
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


class MLP(nn.Module):
    """[Dense -> BatchNorm -> act] per hidden layer, then a final Dense (zeroed if `zero_init`)."""

    hidden: Sequence[int]
    out: int
    act: Callable = nn.relu
    zero_init: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
        for width in self.hidden:
            x = self.act(norm()(nn.Dense(width, dtype=self.dtype)(x)))
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        out = nn.Dense(self.out, kernel_init=init, bias_init=nn.initializers.zeros, dtype=self.dtype)(x)
        return out.astype(jnp.float32)  # logits: supports and losses in float32


# --- conv family (§2.1) ------------------------------------------------------------------


class ResBlock(nn.Module):
    """Post-activation residual block; a strided/widening block's shortcut is a bare conv3x3."""

    channels: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
        y = Conv(self.channels, (3, 3), strides=self.stride, padding=1, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = Conv(self.channels, (3, 3), padding=1, dtype=self.dtype)(y)
        y = norm()(y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = Conv(self.channels, (3, 3), strides=self.stride, padding=1, dtype=self.dtype)(x)
        return nn.relu(y + x)


def _avg_pool(x):
    # PyTorch AvgPool2d(3, 2, 1) counts the zero padding in the average.
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)


class ConvRepresentation(nn.Module):
    channels: int
    res_blocks: int
    dtype: Any = None

    @nn.compact
    def __call__(self, obs, train: bool):
        block = functools.partial(ResBlock, dtype=self.dtype)
        x = obs.astype(jnp.float32) / 255.0
        x = Conv(self.channels // 2, (3, 3), strides=2, padding=1, dtype=self.dtype)(x)
        x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        x = block(self.channels // 2)(x, train)
        x = block(self.channels, stride=2)(x, train)
        x = block(self.channels)(x, train)
        x = _avg_pool(x)
        x = block(self.channels)(x, train)
        x = _avg_pool(x)
        for _ in range(self.res_blocks):
            x = block(self.channels)(x, train)
        return x


class ConvDynamics(nn.Module):
    """num_actions None: a continuous action vector [B, A], tiled to A planes (EZ-V2's `dmc_image`)."""

    channels: int
    res_blocks: int
    num_actions: int | None
    dtype: Any = None
    action_encoding: str = "embedding"  # NetworkConfig.action_encoding

    @nn.compact
    def __call__(self, state, action, train: bool):
        if self.num_actions is None:
            a = jnp.broadcast_to(action.astype(jnp.float32)[:, None, None, :], state.shape[:-1] + action.shape[-1:])
        elif self.action_encoding == "one_hot":  # MuZero: |A| planes
            a = jnp.broadcast_to(jax.nn.one_hot(action, self.num_actions)[:, None, None, :],
                                 state.shape[:-1] + (self.num_actions,))
        else:
            a = jnp.broadcast_to(
                (action.astype(jnp.float32) / self.num_actions)[:, None, None, None], state.shape[:-1] + (1,)
            )
        if self.action_encoding == "embedding" or self.num_actions is None:  # EZ-V2: conv1x1 + LayerNorm; EZ-V1: bare
            a = ConvWithBias(16, (1, 1), bias_init=action_embedding_bias(a.shape[-1]), dtype=self.dtype)(a)
            a = nn.relu(nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=(-3, -2, -1), dtype=self.dtype)(a))
        x = jnp.concatenate([state, a.astype(state.dtype)], axis=-1)
        x = Conv(self.channels, (3, 3), padding=1, dtype=self.dtype)(x)
        x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype)(x) + state)
        for _ in range(self.res_blocks):
            x = ResBlock(self.channels, dtype=self.dtype)(x, train)
        return x


class ConvHeadInput(nn.Module):
    """conv1x1 -> BN -> ReLU -> flatten, the entry of every conv head."""

    reduced_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv(self.reduced_channels, (1, 1), dtype=self.dtype)(x)
        x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        return x.reshape(x.shape[0], -1)


# --- mlp family (§2.3) -------------------------------------------------------------------


class RunningNorm(nn.Module):
    """Running mean/std observation normalisation, updated from every training batch."""

    initial_count: float = 1e3
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool):
        dim = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (dim,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (dim,), jnp.float32)
        count = self.variable("batch_stats", "count", lambda: jnp.float32(self.initial_count))
        if train and not self.is_initializing():
            flat = x.reshape(-1, dim).astype(jnp.float32)
            b_mean, b_var, b_count = flat.mean(0), flat.var(0), jnp.float32(flat.shape[0])
            total = count.value + b_count
            delta = b_mean - mean.value
            new_mean = mean.value + delta * b_count / total
            m2 = var.value * count.value + b_var * b_count + jnp.square(delta) * count.value * b_count / total
            mean.value, var.value, count.value = new_mean, m2 / total, total
        return (x - mean.value) / jnp.sqrt(var.value + self.eps)


class ResidualMLPBlock(nn.Module):
    """Pre-LN residual block: x + Dense(d)(ReLU(Dense(h)(LN(x))))."""

    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.hidden, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(x))
        return x + nn.Dense(x.shape[-1], dtype=self.dtype)(nn.relu(y))


class MLPRepresentation(nn.Module):
    latent_dim: int
    hidden: int
    blocks: int
    normalize: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, obs, train: bool):
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        if self.normalize:
            x = RunningNorm()(x, train)
        x = jnp.tanh(nn.LayerNorm(dtype=self.dtype)(nn.Dense(self.latent_dim, dtype=self.dtype)(x)))
        for _ in range(self.blocks):
            x = ResidualMLPBlock(self.hidden, dtype=self.dtype)(x)
        return x


class MLPDynamics(nn.Module):
    hidden: int
    blocks: int
    action_embedding: int
    num_actions: int | None  # None: continuous actions
    dtype: Any = None
    action_encoding: str = "embedding"  # NetworkConfig.action_encoding (discrete actions)

    @nn.compact
    def __call__(self, state, action, train: bool):
        del train
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        if self.num_actions is not None and self.action_encoding == "plane":
            a = (action.astype(jnp.float32) / self.num_actions)[:, None]
        else:
            if self.num_actions is not None:
                action = jax.nn.one_hot(action, self.num_actions)
            a = action.astype(jnp.float32)
            if self.action_encoding == "embedding" or self.num_actions is None:
                embed = dense(self.action_embedding, bias_init=action_embedding_bias(a.shape[-1]))
                a = nn.relu(nn.LayerNorm(dtype=self.dtype)(embed(a)))
        x = nn.LayerNorm(dtype=self.dtype)(jnp.concatenate([state, a.astype(state.dtype)], axis=-1))
        x = state + dense(state.shape[-1])(nn.relu(dense(self.hidden)(x)))
        for _ in range(self.blocks):
            x = ResidualMLPBlock(self.hidden, dtype=self.dtype)(x)
        return x


# --- heads shared by both families -------------------------------------------------------


class RewardHead(nn.Module):
    """Value prefix through an LSTM (its carry threads through the unroll/search), or a per-step reward."""

    cfg: NetworkConfig

    @nn.compact
    def __call__(self, next_state, lstm_carry, train: bool):
        c, dt = self.cfg, compute_dtype(self.cfg)
        if c.architecture == "conv":
            x, act, hidden = ConvHeadInput(c.reduced_channels, dt)(next_state, train), nn.elu, c.conv_head_hidden
        else:
            x = nn.LayerNorm(dtype=dt)(ResidualMLPBlock(c.latent_dim, dt)(next_state))
            act, hidden = nn.relu, c.mlp_head_hidden
        if c.value_prefix:  # the LSTM and its carry in float32: the carry accumulates over the horizon
            lstm_carry, x = nn.OptimizedLSTMCell(c.lstm_hidden)(lstm_carry, x.astype(jnp.float32))
            x = nn.relu(BatchNorm(use_running_average=not train, dtype=dt)(x))
        logits = MLP(hidden, c.reward_bins, act=act, zero_init=True, dtype=dt)(x, train)
        return lstm_carry, logits


class Prediction(nn.Module):
    cfg: NetworkConfig
    policy_outputs: int
    discrete: bool = True

    @nn.compact
    def __call__(self, state, train: bool):
        c, dt = self.cfg, compute_dtype(self.cfg)
        if c.architecture == "conv":
            x = ResBlock(c.channels, dtype=dt)(state, train)
            v = ConvHeadInput(c.reduced_channels, dt)(x, train)
            p = ConvHeadInput(c.reduced_channels, dt)(x, train)
            # EZ-V2 zero-initialises the conv value head for discrete actions only (family reference C.2).
            value = MLP(c.conv_head_hidden, c.value_bins, act=nn.elu, zero_init=self.discrete, dtype=dt)(v, train)
            widths = c.conv_head_hidden if c.conv_policy_hidden is None else c.conv_policy_hidden
            policy = MLP(widths, self.policy_outputs, act=nn.elu, zero_init=True, dtype=dt)(p, train)
        else:
            v = nn.LayerNorm(dtype=dt)(ResidualMLPBlock(c.latent_dim, dt)(state))
            p = nn.LayerNorm(dtype=dt)(ResidualMLPBlock(c.latent_dim, dt)(state))
            value = MLP(c.mlp_head_hidden, c.value_bins, act=nn.relu, dtype=dt)(v, train)
            policy = MLP(c.mlp_head_hidden, self.policy_outputs, act=nn.relu, zero_init=True, dtype=dt)(p, train)
        return policy, value


class Projector(nn.Module):
    cfg: NetworkConfig

    @nn.compact
    def __call__(self, state, train: bool):
        c, dt = self.cfg, compute_dtype(self.cfg)
        x = state.reshape(state.shape[0], -1)
        if c.architecture == "conv":
            norm = functools.partial(BatchNorm, use_running_average=not train, dtype=dt)
        else:
            norm = functools.partial(nn.LayerNorm, dtype=dt)
        dense = functools.partial(nn.Dense, dtype=dt)
        x = nn.relu(norm()(dense(c.projection_hidden)(x)))
        x = nn.relu(norm()(dense(c.projection_hidden)(x)))
        return norm()(dense(c.projection_dim)(x))


class ProjectionPredictor(nn.Module):
    cfg: NetworkConfig

    @nn.compact
    def __call__(self, x, train: bool):
        c, dt = self.cfg, compute_dtype(self.cfg)
        conv = c.architecture == "conv"
        norm = BatchNorm(use_running_average=not train, dtype=dt) if conv else nn.LayerNorm(dtype=dt)
        return nn.Dense(c.projection_dim, dtype=dt)(nn.relu(norm(nn.Dense(c.predictor_hidden, dtype=dt)(x))))


# --- the whole model ---------------------------------------------------------------------


class EZNet(nn.Module):
    """All EZ-V2 functions over one parameter tree.

    num_actions: discrete action count; None for continuous actions (then `action_dim`).
    policy_outputs: |A| logits (discrete) or 2·dim (mean and std parameters, continuous).
    """

    cfg: NetworkConfig
    num_actions: int | None
    action_dim: int | None = None

    @property
    def policy_outputs(self) -> int:
        return self.num_actions if self.num_actions is not None else 2 * self.action_dim

    def setup(self):
        c, dt = self.cfg, compute_dtype(self.cfg)
        if c.architecture == "conv":
            self.representation = ConvRepresentation(c.channels, c.res_blocks, dt)
            self.dynamics_net = ConvDynamics(c.channels, c.res_blocks, self.num_actions, dt, c.action_encoding)
        else:
            self.representation = MLPRepresentation(c.latent_dim, c.mlp_hidden, c.mlp_blocks, c.normalize_obs, dt)
            self.dynamics_net = MLPDynamics(
                c.mlp_hidden, c.mlp_blocks, c.action_embedding, self.num_actions, dt, c.action_encoding
            )
        self.reward_head = RewardHead(c)
        self.prediction = Prediction(c, self.policy_outputs, self.num_actions is not None)
        self.projector = Projector(c)
        self.predictor = ProjectionPredictor(c)

    def represent(self, obs, train: bool = False):
        return self.normalized(self.representation(obs, train))

    def transition(self, state, action, train: bool = False):
        """The dynamics' next latent (normalised as the representation's)."""
        return self.normalized(self.dynamics_net(state, action, train))

    def normalized(self, state):
        if not self.cfg.state_norm:
            return state
        return min_max_normalized(state)

    def predict(self, state, train: bool = False):
        """-> (policy logits or Gaussian parameters, value logits)."""
        return self.prediction(state, train)

    def dynamics(self, state, action, lstm_carry, train: bool = False):
        """-> (next state, next LSTM carry, reward or value-prefix logits)."""
        next_state = self.transition(state, action, train)
        lstm_carry, reward_logits = self.reward_head(next_state, lstm_carry, train)
        return next_state, lstm_carry, reward_logits

    def next_state(self, state, action):
        """The dynamics' next latent alone (planning through pending actions: no reward needed)."""
        return self.transition(state, action, False)

    def project(self, state, train: bool = False, predict: bool = False):
        """SimSiam projection of a latent; with `predict`, followed by the predictor."""
        z = self.projector(state, train)
        return (self.predictor(z, train) if predict else z).astype(jnp.float32)  # the consistency loss in float32

    def unroll(self, obs, actions, next_obs, train: bool = True):
        """The learner's forward pass (reference §5).

        obs [B, ...] at position 0, actions [B, K, ...], next_obs [B, K, ...] the true
        observations at positions 1..K. Returns the online outputs and the SimSiam targets:
        (policy [B,K+1,·], value [B,K+1,bins], reward [B,K,bins], predicted projections
        [B,K,D], target projections [B,K,D] with gradient stopped).

        Each unrolled latent's gradient is halved before any head reads it (the reference's hook
        on the latent scales the gradient from every consumer: reward, value, policy, projection
        and the next dynamics step); the LSTM carry resets every `lstm_horizon` steps, as in the
        search.
        """
        batch, steps = actions.shape[:2]
        state = self.represent(obs, train)
        policy, value = self.predict(state, train)
        policies, values, rewards, projections = [policy], [value], [], []
        carry = initial_lstm_carry(self.cfg, batch)
        for k in range(steps):
            if k % self.cfg.lstm_horizon == 0:
                carry = initial_lstm_carry(self.cfg, batch)
            state = scale_gradient(self.transition(state, actions[:, k], train), 0.5)
            carry, reward = self.reward_head(state, carry, train)
            policy, value = self.predict(state, train)
            policies.append(policy)
            values.append(value)
            rewards.append(reward)
            projections.append(self.project(state, train, predict=True))
        flat_next = next_obs.reshape((batch * steps,) + next_obs.shape[2:])
        targets = self.project(self.represent(flat_next, train), train)
        targets = jax.lax.stop_gradient(targets.reshape((batch, steps) + targets.shape[1:]))
        stack = lambda xs: jnp.stack(xs, axis=1)  # noqa: E731
        return stack(policies), stack(values), stack(rewards), stack(projections), targets

    def __call__(self, obs, action, train: bool = False):
        """Touches every submodule once (used by `init`)."""
        state = self.represent(obs, train)
        carry = initial_lstm_carry(self.cfg, obs.shape[0])
        next_state, _, reward_logits = self.dynamics(state, action, carry, train)
        policy, value = self.predict(next_state, train)
        return policy, value, reward_logits, self.project(next_state, train, predict=True)


def torch_default_init(params: Any, key: jax.Array) -> Any:
    """Re-draw parameters as PyTorch's defaults would (the reference's initialisation).

    Every Dense and Conv kernel and its bias ~ U(±1/√fan_in) (nn.Linear / nn.Conv2d's
    kaiming_uniform(a=√5)); the value-prefix LSTM's weights and biases ~ U(±1/√hidden) (PyTorch adds
    two such biases per gate, b_ih + b_hh, where flax has one, so its gate biases spread a little
    wider). Layers that
    start at zero (the zero-initialised output heads) stay zero; LayerNorm and BatchNorm scales and
    offsets are 1 and 0 in both libraries. flax's defaults differ: lecun_normal kernels (about √3x the
    scale) and zero biases, which matters where no normalisation follows (the mlp family's residual
    branches and dynamics); the action embedding's bias is PyTorch's under both (`action_embedding_bias`).
    """
    flat = flax.traverse_util.flatten_dict(params)
    out = dict(flat)
    for i, (path, kernel) in enumerate(sorted((p, v) for p, v in flat.items() if p[-1] == "kernel")):
        in_lstm = any("LSTM" in name for name in path)
        fan_in = kernel.shape[-1] if in_lstm else int(np.prod(kernel.shape[:-1]))
        bound = 1.0 / np.sqrt(fan_in)
        k_key, b_key = jax.random.split(jax.random.fold_in(key, i))
        zero = jnp.all(kernel == 0)  # a zero-initialised layer keeps its zeros
        out[path] = jnp.where(zero, kernel, jax.random.uniform(k_key, kernel.shape, kernel.dtype, -bound, bound))
        bias_path = path[:-1] + ("bias",)
        if bias_path in flat:
            bias = flat[bias_path]
            out[bias_path] = jnp.where(zero, bias, jax.random.uniform(b_key, bias.shape, bias.dtype, -bound, bound))
    return flax.traverse_util.unflatten_dict(out)


def initial_lstm_carry(cfg: NetworkConfig, batch: int) -> Any:
    """The zero (c, h) carry of the value-prefix LSTM; an empty placeholder without one."""
    width = cfg.lstm_hidden if cfg.value_prefix else 0
    zeros = jnp.zeros((batch, width), jnp.float32)
    return (zeros, zeros)


def reset_lstm_carry(carry: Any, reset: jax.Array) -> Any:
    """Zero the carry where `reset` [B] is True."""
    return jax.tree.map(lambda x: jnp.where(reset[:, None], 0.0, x), carry)
