"""Run configuration: frozen dataclasses, per-domain presets, and validation before compiling.

Every field is a tyro flag (`--learner.batch-size 128`). The preset is chosen from the env's
domain (Atari -> `atari`, DMC -> `dmc_state`, DMC from pixels -> `dmc_image`, gymnax classic control
-> `classic`, or `control` for its continuous tasks and brax, MinAtar -> `minatar`) unless `--preset`
names one, and every value can be overridden on top of it.

Static fields (shapes, simulation counts, unroll length) fix the compiled program; the
float hyper-parameters are plain Python numbers baked in as constants.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import sys
import types
import typing
from typing import Any, Literal

from ezv.supports import Support


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Representation, dynamics, prediction, reward and SimSiam heads (reference §2)."""

    architecture: Literal["conv", "mlp"] = "conv"
    # conv (Atari, §2.1): 96x96 frames -> 64x6x6 latent.
    channels: int = 64
    reduced_channels: int = 16
    res_blocks: int = 1
    conv_head_hidden: tuple[int, ...] = (32,)
    conv_policy_hidden: tuple[int, ...] | None = None  # the conv policy head's widths (dmc_image: 64); None: as above
    # How the dynamics network sees a discrete action: "embedding" = EZ-V2's learned encoding (conv: the plane
    # a/|A| through conv1x1 + LayerNorm; mlp: one-hot through Dense + LayerNorm), "plane" = EZ-V1's bare plane
    # a/|A| (mlp: the scalar a/|A|), "one_hot" = MuZero's |A| one-hot planes (mlp: the one-hot vector).
    action_encoding: Literal["embedding", "plane", "one_hot"] = "embedding"
    # Min-max normalise every latent to [0, 1] (per sample) after the representation and each dynamics step:
    # MuZero's and EZ-V1's option (`state_norm`), off in EZ-V2. It keeps the real latent s_0 and the unrolled
    # s_1..s_K alike, so the BatchNorm statistics they share hold for both (benchmarks/RESULTS.md, pixel DMC).
    state_norm: bool = False
    # mlp (vector observations, §2.3 blocks).
    latent_dim: int = 128
    mlp_hidden: int = 256
    mlp_blocks: int = 2
    mlp_head_hidden: tuple[int, ...] = (256, 256)
    action_embedding: int = 64
    normalize_obs: bool = True
    # Reward head: value prefix with an LSTM reset every `lstm_horizon` steps (Atari), or per-step reward.
    value_prefix: bool = True
    lstm_hidden: int = 512
    lstm_horizon: int = 5
    # Supports: `bins` atoms over [-h_max, h_max] in h-space (Atari: 601 integer atoms, ±300).
    value_bins: int = 601
    value_h_max: float = 300.0
    reward_bins: int = 601
    reward_h_max: float = 300.0
    # SimSiam projector / predictor.
    projection_hidden: int = 1024
    projection_dim: int = 1024
    predictor_hidden: int = 256
    # Decoded values are clipped from below (DMC: 0, as the reference; None: no clipping).
    value_min: float | None = None
    # Initial weights: flax's defaults (lecun_normal kernels, zero biases) or PyTorch's, as the
    # reference (U(±1/√fan_in) kernels and biases); see networks.torch_default_init.
    init: Literal["flax", "torch"] = "flax"
    # Activations and matmul/convolution inputs (parameters stay float32; normalisation statistics, the
    # value-prefix LSTM, logits, supports and losses are float32 either way). bfloat16 doubles the GPU's
    # matmul peak and halves activation memory; it is slower on CPUs without bf16 units.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def value_support(self) -> Support:
        return Support(self.value_bins, self.value_h_max)

    @property
    def reward_support(self) -> Support:
        return Support(self.reward_bins, self.reward_h_max)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Gumbel MuZero search (reference §3.2 discrete, §3.3 sampled continuous), or EfficientZero's (2021)
    pUCT search (`kind: puct`, discrete actions; family reference B.1, `ezv/puct.py`)."""

    kind: Literal["gumbel", "puct"] = "gumbel"
    # None: gumbel discrete 16, or 4 when the env has fewer than 4 actions (§3.2); continuous 32 (§3.3);
    # puct 50 (EZ-V1, MuZero).
    num_simulations: int | None = None
    # None: 8 with >= 16 actions, 4 with 4..15, 2 with fewer (§3.2).
    max_considered_actions: int | None = None
    gumbel_scale: float = 1.0  # acting and reanalysis; evaluation always uses 0
    value_scale: float = 0.1  # c_scale
    maxvisit_init: float = 50.0  # c_visit
    # How Q is mapped to [0, 1] before σ: "tree" = one min-max over the whole search tree with a
    # 0.01 floor (the reference's), "node" = each node's own min-max (mctx's). See ezv/qtransforms.py.
    q_normalisation: Literal["tree", "node"] = "tree"
    # Continuous actions (§3.3): K root candidates, `policy_sampled_actions` of them from π and the
    # rest from π with `wide_std_scale`·σ (evaluation: all from π); each expanded interior node gets
    # `interior_children` children sampled from its own π (K: K-way interior nodes).
    num_sampled_actions: int = 16
    policy_sampled_actions: int = 4
    wide_std_scale: float = 3.0
    interior_children: int = 2
    # pUCT: score = P·√N/(1+N(a))·(c1 + ln((N + c2 + 1)/c2)) + Q̃, with root priors mixed with
    # Dirichlet(alpha) noise at `dirichlet_fraction` while acting and reanalysing (never in evaluation).
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.25

    def simulations_for(self, num_actions: int | None) -> int:
        """Simulations per search; `num_actions` None means continuous actions."""
        if self.num_simulations is not None:
            return self.num_simulations
        if self.kind == "puct":
            return 50
        if num_actions is None:
            return 32
        return 4 if num_actions < 4 else 16

    def considered_for(self, num_actions: int) -> int:
        if self.max_considered_actions is not None:
            return min(self.max_considered_actions, num_actions)
        return 8 if num_actions >= 16 else 4 if num_actions >= 4 else 2


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """On-device prioritised trajectory replay (reference §5 PER)."""

    capacity: int = 100_000  # transitions over all envs
    alpha: float = 1.0
    beta: float = 1.0
    # β rises linearly from `beta` to this over the run's updates (EZ-V1: 0.4 -> 1); None: β stays `beta`.
    beta_final: float | None = None
    min_weight: float = 0.1  # importance weights are clipped to [min_weight, 1] (0: only normalised by the max)
    priority_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """Targets, losses and optimiser (reference §4, §5)."""

    batch_size: int = 256
    unroll_steps: int = 5
    td_steps: int = 5
    discount: float = 0.997**4  # per agent step (0.997 per frame, frame skip 4)
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 1e-4  # coupled L2, as in the reference
    warmup_fraction: float = 0.01  # of all updates
    lr_decay_updates: int = 100_000  # x lr_decay_rate every this many updates after warm-up
    lr_decay_rate: float = 0.1
    lr_decays: int | None = None  # decay at most this many times (MuZero card: 2, x1/x0.1/x0.01); None: no limit
    max_grad_norm: float = 5.0
    value_coef: float = 0.25  # the reference's 0.5 coefficient x its 0.5 expectile weight
    reward_coef: float = 1.0
    policy_coef: float = 1.0
    consistency_coef: float = 5.0
    target_update_interval: int = 200  # updates between target-network refreshes
    value_target: Literal["mixed", "td", "sve"] = "mixed"
    mixed_start_updates: int = 30_000  # T1: TD targets only before this many updates
    mixed_recent_env_steps: int = 5_000  # T2: the newest transitions always use TD targets
    # EZ-V1's off-policy correction: a sample `age` env steps old bootstraps after
    # n = clip(td_steps - floor(age / td_age_env_steps), 1, td_steps) steps (EZ-V1: 0.3 x 100k); None: n = td_steps.
    td_age_env_steps: int | None = None
    # The share of each batch whose policy targets come from a fresh search with the target network (EZ-V2 1,
    # EZ-V1 0.99, the MuZero card 0); the rest learn the search policy stored when the data was collected.
    reanalyse_fraction: float = 1.0
    augment: bool = True  # random shift + intensity, image observations only
    # Continuous actions (§5): "full" = −Σᵢ π′ᵢ log π(aᵢ) over the K candidates, "simple" =
    # −log π(a*) of the executed choice, "auto" = the reference's full for 1-D actions, simple otherwise.
    continuous_policy_loss: Literal["auto", "full", "simple"] = "auto"
    entropy_coef: float = 0.0  # continuous only: −c_H·Ĥ(π) is added at every unroll position
    entropy_samples: int = 1024  # reparameterised samples per position for Ĥ


@dataclasses.dataclass(frozen=True)
class ActingConfig:
    """How the acting envs' actions come from the search (family reference B.2, B.6). EZ-V2 executes the
    Gumbel search's own choice; EZ-V1 and MuZero draw from the pUCT search's visit counts."""

    # pUCT: sample a ∝ N(a)^(1/T), T = temperatures[i] once the collection phase's updates pass
    # temperature_switches[i-1] of their total (EZ-V1: 1, 0.5, 0.25 at 50% and 75%); T = 0 is the argmax.
    temperatures: tuple[float, ...] = (1.0, 0.5, 0.25)
    temperature_switches: tuple[float, ...] = (0.5, 0.75)
    # ε-greedy over the search's action (the MuZero card: ε 1 -> 0.05 over 100k env steps, with T = 0);
    # ε falls linearly from epsilon_start to epsilon_final over epsilon_env_steps. 0: off.
    epsilon_start: float = 0.0
    epsilon_final: float = 0.0
    epsilon_env_steps: int = 100_000
    random_before_learning: bool = False  # uniform random actions until --learning-starts (EZ-V1)


def run_setting(default: Any) -> Any:
    """A field of how the run is driven (its length, logging, evaluation, checkpoints), not of what
    it learns or of the state's shapes: a resumed run may change it (`resume_differences`)."""
    return dataclasses.field(default=default, metadata={"run_setting": True})


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. `python -m ezv.train --help` lists every flag with the preset's values."""

    env_id: str = "CartPole-v1"
    seed: int = 0
    total_env_steps: int = run_setting(100_000)
    run_dir: str | None = run_setting(None)  # default: runs/{env}-s{seed}-{time}
    # auto (from the env's domain), atari, classic, minatar, dmc_state, control, dmc_image (DMC from pixels),
    # dmc_image_small (its CPU variant), the EfficientZero (2021)
    # and MuZero modes ez1_atari, muzero_atari, ez1_classic, muzero_classic, ez1_minatar, muzero_minatar,
    # Delayed-EfficientZero's dez_atari
    # (configs/NAME.yaml), or the path of a preset file or of a run's config.yaml.
    preset: str = "auto"
    num_envs: int = 4
    replay_ratio: float = 1.0  # learner updates per env step
    learning_starts: int = 2_000  # env steps collected before the first update
    offline_updates: int = run_setting(0)  # learner updates after the last env step
    # Env steps per compiled chunk: one metrics.jsonl line per seed each, and the unit of --eval-interval
    # and --checkpoint-interval (the host sees the run only between chunks).
    log_interval: int = run_setting(1_000)
    eval_interval: int = run_setting(10_000)  # env steps between evaluations (a multiple of log_interval)
    eval_episodes: int = run_setting(10)
    # Agent steps after which a periodic evaluation stops an episode and scores it so far (None: the
    # eval env's own cap, 27k on Atari). The run's final evaluation always plays to the env's cap. The
    # references test with a lower cap during training for time (EZ-V1: 3000, then 27k at the end).
    eval_max_episode_steps: int | None = run_setting(None)
    env_options: dict[str, int | float | bool | str] = dataclasses.field(default_factory=dict)
    quiet: bool = run_setting(False)  # no progress bar (logs still go to metrics.jsonl and stdout lines)
    # Checkpoints in RUN_DIR/checkpoints every this many env steps, and every as many updates in the
    # offline phase (None: every --eval-interval; 0: only at the end).
    checkpoint_interval: int | None = run_setting(None)
    keep_checkpoints: int = run_setting(2)  # how many of the newest checkpoints to keep
    # Continue the run in this directory from its newest checkpoint. Its config.yaml is the base
    # config; flags given with --resume may change what does not change the state's shapes.
    resume: str | None = run_setting(None)
    resume_step: int | None = run_setting(None)  # with --resume: continue from this checkpoint instead of the newest
    num_seeds: int = 1  # train seeds seed, seed+1, ... as independent runs in one compiled program (vmap)
    devices: int = 1  # data-parallel over this many devices, every process's together (envs and batch split)
    tensorboard: bool = run_setting(True)  # TensorBoard event files in RUN_DIR/tensorboard
    wandb: bool = run_setting(False)  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = run_setting("ezv")  # the W&B project of --wandb
    # Execution delay (Delayed-EfficientZero): agent steps from deciding an action to its execution (the
    # walk's upper bound and start with --stochastic-delay); 0: none. README "Execution delays".
    delay: int = 0
    stochastic_delay: bool = False  # the delay walks ±1 each step within [0, --delay] (else it stays --delay)
    delay_change_prob: float = 0.2  # the walk's probability of −1, and of +1, at each step
    # Plan through the pending actions: search from the latent the model predicts for the step the new
    # action executes at, and store executed actions in the replay. --no-forward: the oblivious baseline
    # (searches from the current observation and stores its decisions, as Delayed-EZ's Oblivious-EZ).
    forward: bool = True
    # A new episode's queue of --delay actions: random, or planned by the model (a search from each latent
    # along the plan, as Delayed-EZ); auto: planned with --forward, random without.
    delay_init: Literal["auto", "random", "planned"] = "auto"
    eval_delays: tuple[int, ...] = run_setting(())  # also evaluate at these delays (eval_delay{D}_return_mean)
    network: NetworkConfig = NetworkConfig()
    search: SearchConfig = SearchConfig()
    acting: ActingConfig = ActingConfig()
    replay: ReplayConfig = ReplayConfig()
    learner: LearnerConfig = LearnerConfig()

    # Derived quantities (not flags) -------------------------------------------------------

    @property
    def iterations_per_chunk(self) -> int:
        return self.log_interval // self.num_envs

    @property
    def checkpoint_every(self) -> int:
        """Env steps (and offline updates) between checkpoints; 0: only at the end."""
        return self.eval_interval if self.checkpoint_interval is None else self.checkpoint_interval

    @property
    def updates_per_iteration(self) -> int:
        """Learner updates run by each iteration that learns (see `learn_every`)."""
        return max(1, round(self.replay_ratio * self.num_envs))

    @property
    def learn_every(self) -> int:
        """Iterations between learning iterations (1 unless replay_ratio * num_envs < 1)."""
        per_iteration = self.replay_ratio * self.num_envs
        return 1 if per_iteration >= 1 else round(1 / per_iteration)

    @property
    def collection_updates(self) -> int:
        """Updates while collecting (the acting temperature schedule counts these)."""
        return self.total_updates - self.offline_updates

    @property
    def plans_queue(self) -> bool:
        """A delayed env's new episode starts from a queue the model plans (not a random one)."""
        return self.delay_init == "planned" or (self.delay_init == "auto" and self.forward)

    @property
    def total_updates(self) -> int:
        """Updates over the run (collection phase + offline), for the learning-rate schedule."""
        learning_iterations = max(0, self.total_env_steps - self.learning_starts) // self.num_envs
        return learning_iterations // self.learn_every * self.updates_per_iteration + self.offline_updates


# ---------------------------------------------------------------------------------------
# Plain form (config.yaml, agent files, preset files)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what to change."""


def to_plain(value: Any) -> Any:
    """A config (or any value in one) as YAML/JSON-able data: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # dtypes, classes: their names


def _check_value(hint: Any, value: Any, where: str) -> Any:
    """`value` as the field's type `hint` expects (ints accepted for floats), or a ConfigError that
    says what the field takes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))} (got {value!r}).")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list (got {value!r}).")
        return tuple(_check_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping (got {value!r}).")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be a boolean (true/false) (got {value!r}).")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer (got {value!r}).")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number (got {value!r}).")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string (got {value!r}).")
        return value
    return value


def from_plain(data: dict[str, Any], template: Any = None, *, strict: bool = False, where: str = "") -> Any:
    """A config dataclass from its plain form, on top of `template` (default `Config()`).

    Not strict (a run's saved config): keys this version does not know are ignored and fields
    added since keep the template's value. Strict (preset files, `--preset PATH`): an unknown key,
    a value of the wrong type or a choice the field does not offer is a `ConfigError` that names it
    (checked against the schema's type hints)."""
    template = Config() if template is None else template
    fields = {f.name: f for f in dataclasses.fields(template)}
    unknown = [k for k in data if k not in fields]
    if strict and unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints.append(f"{where}{key}" + (f" (did you mean {where}{close[0]}?)" if close else ""))
        raise ConfigError(f"unknown config key(s): {', '.join(hints)}.")
    hints = typing.get_type_hints(type(template)) if strict else {}
    values = {}
    for name, value in data.items():
        if name not in fields:
            continue
        default = getattr(template, name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be a mapping of its fields (got {value!r}).")
            value = from_plain(value, default, strict=strict, where=f"{where}{name}.")
        elif strict:
            value = _check_value(hints[name], value, f"{where}{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return dataclasses.replace(template, **values)


def _flatten(plain: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in plain.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "env_options":
            out.update(_flatten(value, name + "."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


RUN_SETTINGS = frozenset(f.name for f in dataclasses.fields(Config) if f.metadata.get("run_setting"))


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's config and the current one (plain forms), other than the
    run settings (`run_setting` fields) a resumed run may change: one line per field."""
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for name in sorted(set(a) | set(b)):
        if name.split(".")[0] in RUN_SETTINGS:
            continue
        va, vb = a.get(name, "<absent>"), b.get(name, "<absent>")
        if va != vb:
            diffs.append(f"{name}: checkpoint {va!r}, now {vb!r}")
    return diffs


# ---------------------------------------------------------------------------------------
# Presets: one YAML file each in the top-level `configs/` folder (shipped in the package as
# `ezv/configs`), holding only what differs from `Config()`'s defaults.


def presets_dir() -> str:
    """The folder of the preset files: the installed package's copy, or the source checkout's `configs/`
    (an editable install or a checkout on the path)."""
    installed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


PRESET_NAMES = ("atari", "classic", "minatar", "dmc_state", "control",
                "ez1_atari", "muzero_atari", "ez1_classic", "muzero_classic", "ez1_minatar", "muzero_minatar",
                "dez_atari", "dmc_image", "dmc_image_small")


def load_config_file(path: str) -> Config:
    """A config file (a preset, or a run's config.yaml) read strictly on top of `Config()`'s defaults,
    or on top of the named preset its `base:` key gives (a preset that changes only a few fields of another)."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(f"{path!r} has no `config:` mapping (the format of a preset file or a run's config.yaml).")
    plain = data["config"]
    if "env_spec" in data or "derived" in data:  # a run's config.yaml, maybe written by an older ezv
        plain = with_pre_field_values(plain)
    base = data.get("base")
    if base is not None and base not in PRESET_NAMES:
        raise ConfigError(f"{path}: base {base!r} is not a preset name (one of {', '.join(PRESET_NAMES)}).")
    try:
        return from_plain(plain, None if base is None else _named_preset(base), strict=True)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


_LOADING: set[str] = set()  # presets being read, so that a `base:` cycle is an error and not a recursion


@functools.lru_cache(maxsize=None)
def _named_preset(name: str) -> Config:
    if name in _LOADING:
        raise ConfigError(f"preset {name!r} is its own base (a `base:` cycle through {', '.join(sorted(_LOADING))}).")
    _LOADING.add(name)
    try:
        return load_config_file(os.path.join(presets_dir(), f"{name}.yaml"))
    finally:
        _LOADING.discard(name)


def load_preset(name_or_path: str) -> Config:
    """A preset by name (`configs/NAME.yaml`) or a config file's path."""
    if name_or_path in PRESET_NAMES:
        return _named_preset(name_or_path)
    if os.path.isfile(name_or_path):
        return load_config_file(name_or_path)
    raise ConfigError(f"unknown --preset {name_or_path!r}: use one of auto, {', '.join(PRESET_NAMES)}, or the path "
                      "of a preset file or of a run's config.yaml.")


# ---------------------------------------------------------------------------------------
# A run's saved config (config.yaml, resume, agent files)


def write_run_config(path: str, cfg: Any, extra: dict[str, Any], keep_previous: bool = False) -> None:
    """Write a run's config.yaml (the config under `config:`, `extra` beside it) atomically;
    `keep_previous` (a resumed run) first keeps the old one as config.<n>.yaml when the new one differs."""
    import yaml

    from ezv.files import write_atomic

    target = os.path.join(path, "config.yaml")
    text = yaml.safe_dump({"config": to_plain(cfg), **to_plain(extra)}, sort_keys=False)
    if keep_previous and os.path.exists(target):
        with open(target) as f:
            old = f.read()
        if old == text:
            return
        n = 1
        while os.path.exists(os.path.join(path, f"config.{n}.yaml")):
            n += 1
        with open(os.path.join(path, f"config.{n}.yaml"), "w") as f:
            f.write(old)
    write_atomic(target, text)


def config_from_plain(data: dict[str, Any]) -> Config:
    """A run's config from its plain form: its preset's values, overridden by every saved field.
    A field a config was saved without takes the value that ezv used before the field existed."""
    base = load_preset(data["preset"]) if data.get("preset") in PRESET_NAMES else Config()
    preset = dataclasses.replace(base, env_id=data["env_id"])
    return from_plain(with_pre_field_values(data), preset)


# Network fields added after runs were saved, with the behaviour ezv had before each existed.
NETWORK_PRE_FIELD_VALUES = {
    "compute_dtype": "float32",
    "state_norm": False,  # latents unscaled before 2026-12-07
}


def with_pre_field_values(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config (complete when written) with the values ezv used before a field existed, for
    the fields it was saved without."""
    search, network = data.get("search"), data.get("network")
    if isinstance(search, dict) and "q_normalisation" not in search:
        data = {**data, "search": {**search, "q_normalisation": "node"}}  # mctx's rule until 2026-12
    if isinstance(network, dict):
        data = {**data, "network": {**NETWORK_PRE_FIELD_VALUES, **network}}
    if "eval_max_episode_steps" not in data:  # no periodic cap before 2026-12-03, the atari preset's 3000 since
        data = {**data, "eval_max_episode_steps": None}
    return data


def load_run_config(run_dir: str) -> Config:
    import yaml

    if not os.path.isdir(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no such directory.")
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"--resume {run_dir!r}: it has no config.yaml, so it is not an ezv run directory.")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)["config"]
        cfg = config_from_plain(data)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise ConfigError(f"--resume {run_dir!r}: config.yaml cannot be read ({type(e).__name__}: {e}).") from e
    check_env_protocol_unchanged(run_dir, data, cfg)
    return cfg


def check_env_protocol_unchanged(run_dir: str, data: dict[str, Any], cfg: Config) -> None:
    """Runs started before 2026-12-03 (their config has no `search.q_normalisation`) stepped envpool
    DMC by physics sub-steps and ended Atari training games at 3000 agent steps."""
    from ezv.envs import backend_of

    if "q_normalisation" in (data.get("search") or {}) or not backend_of(cfg.env_id).startswith("envpool"):
        return
    if backend_of(cfg.env_id) == "envpool-dmc":
        raise ConfigError(
            f"--resume {run_dir!r}: this {cfg.env_id} run was started before ezv repeated whole DMC control "
            "steps (it stepped physics sub-steps, with rewards on a 0-500 scale); continuing it would change "
            "the task under the agent. Start a new run."
        )
    print(f"note: {run_dir} was started when Atari training games ended at 3000 agent steps; it continues "
          "with games of up to 100,000 agent steps (the reference's protocol).", file=sys.stderr)


DOMAIN_PRESETS = {"atari": "atari", "classic": "classic", "minatar": "minatar", "bsuite": "classic", "misc": "classic",
                  "dmc": "dmc_state", "dmc_pixels": "dmc_image", "brax": "control"}


def preset_name_for(domain: str, continuous: bool = False, image: bool = False) -> str:
    """The preset `--preset auto` picks: by domain, and `control` for a continuous classic task. A user's own env
    (domain `custom`) gets one by its spec: images `atari` (discrete) or `dmc_image`, vectors `classic` or `control`."""
    if domain == "custom":
        return ("dmc_image" if continuous else "atari") if image else ("control" if continuous else "classic")
    if domain not in DOMAIN_PRESETS:
        raise ValueError(f"no preset for the {domain!r} domain (presets: {', '.join(PRESET_NAMES)}).")
    name = DOMAIN_PRESETS[domain]
    return "control" if continuous and name == "classic" else name


def auto_preset_name(env_id: str, env_options: dict[str, Any] | None = None) -> str:
    """The preset `--preset auto` picks for `env_id` (a user's env is built once to read its spec)."""
    import ezv.envs as envs

    domain = envs.domain_of(env_id)
    if domain == "custom":
        spec = envs.spec_of(env_id, **(env_options or {}))
        return preset_name_for(domain, not spec.discrete, spec.is_image)
    return preset_name_for(domain, envs.has_continuous_actions(env_id))


def make_config(env_id: str | None = None, preset: str = "auto", **overrides: Any) -> Config:
    """The config `python -m ezv.train --env-id ENV --preset P [flags]` would run, from Python: the preset for
    the env (or a preset file), with `overrides` on top. Nested fields are reached with `__`
    (`learner__batch_size=64`) or a mapping (`learner={"batch_size": 64}`); `env_options` add to the preset's.
    Unknown fields and values of the wrong type raise a ConfigError naming them (with the closest field)."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *groups, name = key.split("__")
        where = nested
        for group in groups:
            where = where.setdefault(group, {})
            if not isinstance(where, dict):
                raise ConfigError(f"{key}: {group} is given both as a value and as a group of fields.")
        if isinstance(where.get(name), dict) and isinstance(value, dict):
            where[name] = {**where[name], **value}
        else:
            where[name] = value
    options = nested.pop("env_options", {}) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"env_options must be a mapping of option names to values (got {options!r}).")
    if preset == "auto":
        preset = auto_preset_name(env_id or Config.env_id, options)
    base = load_preset(preset)  # a name, or a preset file / run's config.yaml (read strictly)
    # A file's values apply to `env_id` when it is given, else to the env the file was written for.
    env_id = env_id or (base.env_id if preset not in PRESET_NAMES else Config.env_id)
    default = dataclasses.replace(base, env_id=env_id, run_dir=None, resume=None, resume_step=None,
                                  env_options={**base.env_options, **options})
    cfg = from_plain(nested, default, strict=True)
    return dataclasses.replace(cfg, preset=preset if preset in PRESET_NAMES else base.preset)


def validate(cfg: Config, spec: Any) -> None:
    """Everything that would stop a run, checked once before anything compiles (`Program` calls it
    after building the envs, whose spec it needs); one line per problem, saying what to change."""
    errors = [*_loop_errors(cfg), *_learner_errors(cfg), *_search_errors(cfg, spec), *_family_errors(cfg, spec),
              *_delay_errors(cfg), *_layout_errors(cfg, spec.backend), *_run_errors(cfg)]
    if errors:
        raise ConfigError("\n".join(errors))


def _loop_errors(cfg: Config) -> list[str]:
    errors = []
    if cfg.num_envs < 1:
        errors.append(f"--num-envs must be >= 1 (got {cfg.num_envs}).")
    if cfg.log_interval < 1:
        errors.append(f"--log-interval must be >= 1 (got {cfg.log_interval}).")
    if cfg.num_envs < 1 or cfg.log_interval < 1:
        return errors  # the checks below divide by them
    if cfg.log_interval % cfg.num_envs:
        errors.append(f"--log-interval ({cfg.log_interval}) must be a multiple of --num-envs ({cfg.num_envs}).")
    if cfg.eval_interval % cfg.log_interval:
        errors.append(f"--eval-interval ({cfg.eval_interval}) must be a multiple of --log-interval "
                      f"({cfg.log_interval}).")
    if cfg.total_env_steps % cfg.log_interval:
        errors.append(
            f"--total-env-steps ({cfg.total_env_steps}) must be a multiple of --log-interval ({cfg.log_interval})."
        )
    per_iteration = cfg.replay_ratio * cfg.num_envs
    if cfg.replay_ratio <= 0:
        errors.append(f"--replay-ratio must be > 0 (got {cfg.replay_ratio}).")
    elif not (
        math.isclose(per_iteration, round(per_iteration)) and round(per_iteration) >= 1
        or per_iteration < 1 and math.isclose(1 / per_iteration, round(1 / per_iteration))
    ):
        errors.append(
            f"--replay-ratio x --num-envs = {per_iteration:g} updates per iteration; it must be a whole number "
            "or the reciprocal of one (e.g. 0.25 with 8 envs = 2 updates per iteration)."
        )
    if cfg.learning_starts >= cfg.total_env_steps:
        errors.append(
            f"--learning-starts ({cfg.learning_starts}) must be below --total-env-steps ({cfg.total_env_steps})."
        )
    if cfg.eval_episodes < 1:
        errors.append("--eval-episodes must be >= 1.")
    if cfg.eval_max_episode_steps is not None and cfg.eval_max_episode_steps < 1:
        errors.append("--eval-max-episode-steps must be >= 1 (or None: the eval env's own cap).")
    return errors


def _learner_errors(cfg: Config) -> list[str]:
    errors, learner = [], cfg.learner
    rows_per_env = cfg.replay.capacity // cfg.num_envs if cfg.num_envs > 0 else 0
    window = learner.unroll_steps + learner.td_steps + 1
    if cfg.learning_starts < window * cfg.num_envs:
        errors.append(
            f"--learning-starts ({cfg.learning_starts}) must be at least (unroll + td + 1) x num_envs = "
            f"{window * cfg.num_envs} env steps, so that the first batch has complete windows."
        )
    if rows_per_env < 2 * window:
        errors.append(
            f"--replay.capacity ({cfg.replay.capacity}) holds {rows_per_env} rows per env; it needs at least "
            f"{2 * window} (two windows of unroll + td + 1) per env."
        )
    if learner.batch_size < 1:
        errors.append("--learner.batch-size must be >= 1.")
    if learner.unroll_steps < 1 or learner.td_steps < 1:
        errors.append("--learner.unroll-steps and --learner.td-steps must be >= 1.")
    if not 0.0 < learner.discount <= 1.0:
        errors.append(f"--learner.discount must be in (0, 1] (got {learner.discount}).")
    return errors


def _search_errors(cfg: Config, spec: Any) -> list[str]:
    errors, search, learner = [], cfg.search, cfg.learner
    if cfg.network.architecture == "conv" and not spec.is_image:
        pixels = " (or DMC from pixels: --env-id pixels/<DMC id>)" if spec.domain == "dmc" else ""
        errors.append(f"--network.architecture conv takes image observations ([H, W, C] uint8); {spec.env_id} gives "
                      f"{tuple(spec.obs_shape)} {spec.obs_dtype}: use --network.architecture mlp{pixels}.")
    if spec.discrete:
        if search.max_considered_actions is not None and search.max_considered_actions < 1:
            errors.append("--search.max-considered-actions must be >= 1.")
        return errors
    if not 1 <= search.policy_sampled_actions <= search.num_sampled_actions:
        errors.append(f"--search.policy-sampled-actions ({search.policy_sampled_actions}) must be in "
                      f"1..--search.num-sampled-actions ({search.num_sampled_actions}).")
    if not 1 <= search.interior_children <= search.num_sampled_actions:
        errors.append(f"--search.interior-children ({search.interior_children}) must be in "
                      f"1..--search.num-sampled-actions ({search.num_sampled_actions}).")
    if learner.entropy_coef and learner.entropy_samples < 1:
        errors.append("--learner.entropy-samples must be >= 1 when --learner.entropy-coef is set.")
    return errors


def _family_errors(cfg: Config, spec: Any) -> list[str]:
    """The EfficientZero (2021) and MuZero settings: pUCT search, acting from visits, stored policies."""
    errors, search, acting, learner, replay = [], cfg.search, cfg.acting, cfg.learner, cfg.replay
    if not spec.discrete:
        if search.kind == "puct":
            errors.append("--search.kind puct takes discrete actions only (EfficientZero 2021 and MuZero are "
                          "discrete); use --search.kind gumbel for continuous control.")
        if learner.reanalyse_fraction < 1:
            errors.append("--learner.reanalyse-fraction below 1 needs discrete actions (the stored policy of a "
                          "continuous search is over its own sampled candidates).")
        if cfg.network.action_encoding != "embedding":
            errors.append("--network.action-encoding plane/one_hot are for discrete actions; continuous actions "
                          "use embedding.")
    if search.dirichlet_alpha <= 0 or not 0.0 <= search.dirichlet_fraction <= 1.0:
        errors.append(f"--search.dirichlet-alpha must be > 0 and --search.dirichlet-fraction in [0, 1] (got "
                      f"{search.dirichlet_alpha}, {search.dirichlet_fraction}).")
    if search.pb_c_base <= 0:
        errors.append(f"--search.pb-c-base must be > 0 (got {search.pb_c_base}).")
    if len(acting.temperatures) != len(acting.temperature_switches) + 1:
        errors.append(f"--acting.temperatures needs one more value than --acting.temperature-switches (got "
                      f"{len(acting.temperatures)} and {len(acting.temperature_switches)}).")
    if any(t < 0 for t in acting.temperatures):
        errors.append("--acting.temperatures must be >= 0 (0: the most visited action).")
    switches = acting.temperature_switches
    if any(not 0.0 <= x <= 1.0 for x in switches) or any(b <= a for a, b in zip(switches, switches[1:])):
        errors.append("--acting.temperature-switches must be increasing fractions of the collection updates in "
                      f"[0, 1] (got {list(switches)}).")
    if not (0.0 <= acting.epsilon_start <= 1.0 and 0.0 <= acting.epsilon_final <= 1.0):
        errors.append("--acting.epsilon-start and --acting.epsilon-final must be in [0, 1].")
    if acting.epsilon_env_steps < 1:
        errors.append("--acting.epsilon-env-steps must be >= 1.")
    if not 0.0 <= learner.reanalyse_fraction <= 1.0:
        errors.append(f"--learner.reanalyse-fraction must be in [0, 1] (got {learner.reanalyse_fraction}).")
    elif learner.reanalyse_fraction < 1 and learner.value_target != "td":
        errors.append(f"--learner.reanalyse-fraction {learner.reanalyse_fraction} needs --learner.value-target td: "
                      f"the {learner.value_target} target uses a search value for every sample (EZ-V1 and "
                      "MuZero learn TD values).")
    if learner.td_age_env_steps is not None and learner.td_age_env_steps < 1:
        errors.append("--learner.td-age-env-steps must be >= 1 (or None: no age correction).")
    if learner.lr_decays is not None and learner.lr_decays < 0:
        errors.append("--learner.lr-decays must be >= 0 (or None: no limit).")
    if not 0.0 <= replay.min_weight <= 1.0:
        errors.append(f"--replay.min-weight must be in [0, 1] (got {replay.min_weight}).")
    if replay.beta < 0 or (replay.beta_final is not None and replay.beta_final < 0):
        errors.append("--replay.beta and --replay.beta-final must be >= 0.")
    return errors


def _delay_errors(cfg: Config) -> list[str]:
    """Execution-delay settings (Delayed-EfficientZero)."""
    errors = []
    if cfg.delay < 0 or any(d < 0 for d in cfg.eval_delays):
        errors.append(f"--delay and --eval-delays must be >= 0 agent steps (got {cfg.delay}, {list(cfg.eval_delays)}).")
    if not 0.0 <= cfg.delay_change_prob <= 0.5:
        errors.append(f"--delay-change-prob is the probability of each of -1 and +1 per step, in [0, 0.5] (got "
                      f"{cfg.delay_change_prob}).")
    if cfg.stochastic_delay and cfg.delay == 0 and not cfg.eval_delays:
        errors.append("--stochastic-delay needs --delay M (the walk's upper bound and start) or --eval-delays.")
    if cfg.delay_init == "planned" and not cfg.forward:
        errors.append("--delay-init planned needs --forward (the plan is made with the model through the queue); "
                      "the oblivious baseline starts episodes from a random queue.")
    return errors


def _layout_errors(cfg: Config, backend: str) -> list[str]:
    """Seed and device settings this backend and these processes' devices can run."""
    from ezv import distributed

    errors = []
    if cfg.num_seeds < 1:
        errors.append(f"--num-seeds must be >= 1 (got {cfg.num_seeds}).")
    if cfg.devices < 1:
        errors.append(f"--devices must be >= 1 (got {cfg.devices}).")
        return errors
    errors += distributed.layout_errors(cfg.devices)
    if cfg.devices > 1:
        if backend in ("envpool", "gymnasium"):
            errors.append(f"--devices > 1 needs a pure-JAX env (gymnax, dmc/..., brax/..., your own JAX env): "
                          f"{backend}'s envs live in one host process and cannot be split across devices. Use "
                          "--devices 1.")
        if cfg.num_envs % cfg.devices:
            errors.append(f"--num-envs ({cfg.num_envs}) must be divisible by --devices ({cfg.devices}).")
        if cfg.learner.batch_size % cfg.devices:
            errors.append(f"--learner.batch-size ({cfg.learner.batch_size}) must be divisible by --devices "
                          f"({cfg.devices}).")
    return errors


def _run_errors(cfg: Config) -> list[str]:
    """Checkpointing, resuming and logging settings."""
    errors = []
    every = cfg.checkpoint_every
    if every < 0 or (every and cfg.log_interval > 0 and every % cfg.log_interval):
        errors.append(f"--checkpoint-interval ({every}) must be 0 (only at the end) or a positive multiple of "
                      f"--log-interval ({cfg.log_interval}).")
    if cfg.keep_checkpoints < 1:
        errors.append(f"--keep-checkpoints must be >= 1 (got {cfg.keep_checkpoints}).")
    if cfg.resume_step is not None and not cfg.resume:
        errors.append("--resume-step needs --resume RUN_DIR.")
    if cfg.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            errors.append("--wandb needs the wandb package: pip install wandb (or drop --wandb).")
    return errors
