"""The experiment configuration: model, data, optimizer, schedule, trainer, runtime.

Defaults are the paper's recipe (section 4): RMSProp with decay 0.9, momentum
0.9, epsilon 1.0; learning rate 0.45 at a global batch of 512, scaled linearly
with the batch; x0.1 every 160K of 560K steps. `official_configs/*.yaml`
override them per setup.
"""

import dataclasses
from typing import Optional

from polynet_tf import fileio
from polynet_tf.configs import base
from polynet_tf.data.config import DataConfig
from polynet_tf.models.architectures import get_pretrained_config, resolve_architecture
from polynet_tf.models.options import ModelOptions


@dataclasses.dataclass
class ModelConfig(ModelOptions):
    """Which PolyNet to build: the architecture, the classes and `ModelOptions`.

    The option fields, their defaults and their checks are those of
    `PolyNet(**options)` (`polynet_tf.models.options.ModelOptions`).
    """

    drop_path_rate: float = 0.0  # a config gives the paper's linear 0 -> rate
    architecture: str = "very_deep"
    num_classes: int = 1000


@dataclasses.dataclass
class OptimizerConfig:
    """Optimizer and loss terms."""

    name: str = "rmsprop"  # rmsprop | momentum | adam
    rho: float = 0.9
    momentum: float = 0.9
    epsilon: float = 1.0
    weight_decay: float = 4e-5  # L2 (sum of squares / 2) on conv and dense kernels
    label_smoothing: float = 0.0
    clip_global_norm: Optional[float] = None


@dataclasses.dataclass
class ScheduleConfig:
    """Learning rate: linear scaling with the batch, warm-up, then step decay."""

    base_learning_rate: float = 0.45
    base_batch_size: int = 512  # lr = base_learning_rate * global_batch / base_batch_size
    warmup_steps: int = 0
    decay_steps: int = 160_000  # multiply by decay_rate every decay_steps
    decay_rate: float = 0.1


@dataclasses.dataclass
class AdaptiveDropPathConfig:
    """Paper section 4: stochastic paths switched on when overfitting shows."""

    enabled: bool = True
    gap_threshold: float = 0.05  # train top-1 minus validation top-1
    max_rate: float = 0.25  # linear 0 (bottom) -> max_rate (top)


@dataclasses.dataclass
class TrainerConfig:
    """The training loop."""

    train_steps: int = 560_000
    steps_per_loop: int = 100
    checkpoint_interval: int = 1000
    max_checkpoints: int = 5
    eval_interval: int = 10_000
    eval_steps: Optional[int] = None  # None: the whole validation set
    summary_interval: int = 100
    mixed_precision: Optional[str] = None  # None | "mixed_float16" | "mixed_bfloat16"
    # Training-mode BatchNorm: "fused" (TensorFlow's fused kernel where it
    # applies, polynet_tf.training.fused_batch_norm) or "keras" (Keras's layer).
    batch_norm_kernel: str = "fused"  # fused | keras
    # Exponential moving average of the trainable weights, kept beside them
    # (polynet_tf.training.ema); evaluation during training and export use it.
    # 0: off; typical 0.999-0.9999 (about 1 / (1 - decay) steps of memory).
    ema_decay: float = 0.0
    # Micro-batches of `train_data.global_batch_size` whose gradients are
    # summed before one update: the update's batch is the product.
    accumulation_steps: int = 1
    adaptive_drop_path: AdaptiveDropPathConfig = dataclasses.field(
        default_factory=AdaptiveDropPathConfig)


@dataclasses.dataclass
class RuntimeConfig:
    """Distribution and fault handling."""

    distribution_strategy: str = "auto"  # auto | mirrored | multi_worker | one_device
    collective_timeout_seconds: float = 600.0
    startup_timeout_seconds: float = 900.0  # every worker must connect within this
    communication: str = "auto"  # auto | ring | nccl
    seed: int = 0
    # tf.config.experimental.enable_op_determinism(): with a deterministic
    # input pipeline (DataConfig.deterministic), reruns give the same weights.
    deterministic_ops: bool = False
    # Threads of TensorFlow's op pools (tf.config.threading), set before any
    # op runs; 0: TensorFlow's default (the machine's cores).
    intra_op_threads: int = 0  # inside one op (a convolution's parallel loops)
    inter_op_threads: int = 0  # ops run at the same time


# What `init.freeze` may name: PolyNet's parts bottom to top (layer names
# `stem`, `stage_a_<i>`, `reduction_a`, ...), each freezing itself and all below.
FREEZE_CHOICES = ("none", "stem", "stage_a", "reduction_a", "stage_b", "reduction_b",
                  "stage_c", "backbone")
# `init.freeze` by feature level (`polynet_tf.models.features`): `level_N` freezes every
# layer that computes levels 0 to N. Levels 0 and 1 are inside the stem, one layer.
FREEZE_LEVELS = {"level_0": "stem", "level_1": "stem", "level_2": "stage_a",
                 "level_3": "stage_b", "level_4": "stage_c"}


@dataclasses.dataclass
class InitConfig:
    """Fine-tuning: the initial weights, what is frozen, the new head's rate.

    See `polynet_tf.training.finetune` and docs/finetuning.md.
    """

    # "" (random initialization) | "imagenet" | a .weights.h5 file | a training
    # run's model_dir or checkpoint prefix (its params.yaml tells the architecture).
    weights: str = ""
    architecture: Optional[str] = None  # a weights file's architecture (default: model's)
    num_classes: Optional[int] = None  # a weights file's classes (default: read from it)
    # none | stem | stage_a | reduction_a | stage_b | reduction_b | stage_c | backbone:
    # that part and every one below it keep their weights (BatchNorms in inference mode);
    # or level_0 ... level_4: every layer up to that feature level (FREEZE_LEVELS).
    freeze: str = "none"
    batch_norm_inference: bool = False  # every BatchNorm frozen: moving statistics fixed
    head_learning_rate_multiplier: float = 1.0  # the classifier's rate (own optimizer)


@dataclasses.dataclass
class ExperimentConfig:
    """Everything a training or evaluation run needs."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=True))
    eval_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=False))
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)

    def to_dict(self):
        return base.to_dict(self)

    def validate(self, mode="train"):
        """Checks values and cross-field constraints; returns self.

        Args:
            mode: "train", "eval" or "train_and_eval": which data must be set.

        Raises:
            base.ConfigError: naming the key.
        """
        try:
            resolve_architecture(self.model.architecture)
        except ValueError as error:
            raise base.ConfigError(f"'model.architecture': {error}") from None
        _positive("model.num_classes", self.model.num_classes)
        _positive("model.width_multiplier", self.model.width_multiplier)
        _in_range("model.drop_path_rate", self.model.drop_path_rate, 0.0, 1.0)
        _in_range("model.dropout_rate", self.model.dropout_rate, 0.0, 1.0)
        try:
            ModelOptions.of(self.model)
        except ValueError as error:
            raise base.ConfigError(f"'model': {error}") from None
        _choice("optimizer.name", self.optimizer.name, ("rmsprop", "momentum", "adam"))
        _in_range("optimizer.label_smoothing", self.optimizer.label_smoothing, 0.0, 1.0)
        if self.optimizer.weight_decay < 0:
            raise base.ConfigError("'optimizer.weight_decay' must be >= 0")
        if self.optimizer.clip_global_norm is not None:
            _positive("optimizer.clip_global_norm", self.optimizer.clip_global_norm)
        _positive("schedule.base_learning_rate", self.schedule.base_learning_rate)
        _positive("schedule.base_batch_size", self.schedule.base_batch_size)
        _positive("schedule.decay_steps", self.schedule.decay_steps)
        if self.schedule.warmup_steps < 0:
            raise base.ConfigError("'schedule.warmup_steps' must be >= 0")
        for key in ("train_steps", "steps_per_loop", "checkpoint_interval", "max_checkpoints",
                    "eval_interval", "summary_interval"):
            _positive(f"trainer.{key}", getattr(self.trainer, key))
        if self.trainer.eval_steps is not None:
            _positive("trainer.eval_steps", self.trainer.eval_steps)
        _choice("trainer.mixed_precision", self.trainer.mixed_precision,
                (None, "mixed_float16", "mixed_bfloat16"))
        _choice("trainer.batch_norm_kernel", self.trainer.batch_norm_kernel,
                ("fused", "keras"))
        _in_range("trainer.ema_decay", self.trainer.ema_decay, 0.0, 1.0)
        if not (isinstance(self.trainer.accumulation_steps, int)
                and self.trainer.accumulation_steps >= 1):
            raise base.ConfigError(
                "'trainer.accumulation_steps' must be an integer >= 1 (1: no accumulation), "
                f"got {self.trainer.accumulation_steps!r}")
        _in_range("trainer.adaptive_drop_path.max_rate",
                  self.trainer.adaptive_drop_path.max_rate, 0.0, 1.0)
        _in_range("trainer.adaptive_drop_path.gap_threshold",
                  self.trainer.adaptive_drop_path.gap_threshold, 0.0, 1.0)
        _choice("runtime.distribution_strategy", self.runtime.distribution_strategy,
                ("auto", "mirrored", "multi_worker", "one_device"))
        _choice("runtime.communication", self.runtime.communication, ("auto", "ring", "nccl"))
        _positive("runtime.collective_timeout_seconds", self.runtime.collective_timeout_seconds)
        _positive("runtime.startup_timeout_seconds", self.runtime.startup_timeout_seconds)
        for key in ("intra_op_threads", "inter_op_threads"):
            if getattr(self.runtime, key) < 0:
                raise base.ConfigError(f"'runtime.{key}' must be >= 0 (0: TensorFlow's "
                                       f"default), got {getattr(self.runtime, key)!r}")
        _validate_init(self)
        needs = {"train": ("train_data",), "eval": ("eval_data",),
                 "train_and_eval": ("train_data", "eval_data")}[mode]
        for name in needs:
            data = getattr(self, name)
            if not (data.file_pattern or data.tfds_name):
                raise base.ConfigError(
                    f"'{name}' needs a source: set '{name}.file_pattern' (TFRecord shards) "
                    f"or '{name}.tfds_name'")
            try:
                data.validate()
            except ValueError as error:
                raise base.ConfigError(f"In '{name}': {error}") from None
        for name in ("train_data", "eval_data"):
            classes = getattr(self, name).num_classes
            if classes is not None and classes > self.model.num_classes:
                raise base.ConfigError(
                    f"'{name}.num_classes' is {classes} but the model has "
                    f"'model.num_classes'={self.model.num_classes} outputs: labels up to "
                    f"{classes - 1} would have no output. Make them equal (or leave "
                    f"'{name}.num_classes' unset: the trainer checks labels against "
                    "'model.num_classes').")
        if self.train_data.is_training is not True:
            raise base.ConfigError("'train_data.is_training' must be true")
        if self.eval_data.is_training is not False:
            raise base.ConfigError("'eval_data.is_training' must be false")
        return self


def _validate_init(config):
    init = config.init
    _choice("init.freeze", init.freeze, FREEZE_CHOICES + tuple(FREEZE_LEVELS))
    _positive("init.head_learning_rate_multiplier", init.head_learning_rate_multiplier)
    if init.num_classes is not None:
        _positive("init.num_classes", init.num_classes)
    if not init.weights and (init.architecture or init.num_classes):
        raise base.ConfigError("'init.architecture' and 'init.num_classes' describe "
                               "'init.weights'; set it too")
    if init.weights == "imagenet":
        try:
            get_pretrained_config(config.model.architecture, "imagenet")
            published = config.model.width_multiplier == 1.0
        except ValueError:
            published = False
        if not published:
            name = get_pretrained_config(None, "imagenet")[0]
            raise base.ConfigError(
                f"'init.weights: imagenet' are the released {name} weights: set "
                f"'model.architecture: {name}' and 'model.width_multiplier: 1.0', got "
                f"{config.model.architecture!r} at {config.model.width_multiplier}")
    if (init.head_learning_rate_multiplier != 1.0
            and config.trainer.mixed_precision == "mixed_float16"):
        raise base.ConfigError(
            "'init.head_learning_rate_multiplier' needs a second optimizer, which the "
            "loss scaling of 'trainer.mixed_precision: mixed_float16' does not cover; "
            "use mixed_bfloat16 (no loss scaling) or a multiplier of 1.0")


def _positive(key, value):
    if not value > 0:
        raise base.ConfigError(f"'{key}' must be positive, got {value!r}")


def _in_range(key, value, low, high):
    if not low <= value < high:
        raise base.ConfigError(f"'{key}' must be in [{low}, {high}), got {value!r}")


def _choice(key, value, allowed):
    if value not in allowed:
        raise base.ConfigError(f"'{key}' must be one of {list(allowed)}, got {value!r}")


def load_experiment(config_files=(), params_override="", mode="train"):
    """Merges YAML files in order, then overrides; validates.

    The one loader of experiment configurations: training, evaluation,
    export and fine-tuning read YAML files (a run's `params.yaml`) through it.

    Args:
        config_files: YAML paths (or URIs); later files override earlier ones.
        params_override: "a.b=1,c=2" applied last.
        mode: which data must be set ("train", "eval", "train_and_eval"), or
            None to read the model and the data's preprocessing of a
            configuration without requiring data sources (evaluation and
            export read their own data): keys and types are still checked.

    Returns:
        An `ExperimentConfig` (validated for `mode`).

    Raises:
        FileNotFoundError: with mode None, a missing file.
        base.ConfigError: naming the offending key or file.
    """
    if isinstance(config_files, str):
        config_files = [config_files]
    values = {}
    for path in config_files:
        if mode is None and not fileio.isfile(path):
            raise FileNotFoundError(f"Configuration file {path!r} does not exist.")
        values = base.merge_dicts(values, base.load_yaml(path))
    values = base.merge_dicts(values, base.parse_overrides(params_override))
    for section in ("train_data", "eval_data"):
        if not isinstance(values.get(section, {}), dict):
            raise base.ConfigError(f"`{section}` must be a mapping of its fields; received "
                                   f"{values[section]!r}.")
    values.setdefault("train_data", {}).setdefault("is_training", True)
    values.setdefault("eval_data", {}).setdefault("is_training", False)
    config = base.from_dict(ExperimentConfig, values)
    return config if mode is None else config.validate(mode)


def load_for_evaluation(params_file, config_files=(), params_override=""):
    """The configuration of `--mode eval` on a run whose `params.yaml` is `params_file`.

    The network is the run's (its checkpoints hold that network); the rest
    is the run's too unless `config_files` or `params_override` set it (the
    validation data, `trainer.eval_steps`, `runtime`). The file is only read.

    Args:
        params_file: the run's `params.yaml`.
        config_files: YAML paths given on the command line, later ones win.
        params_override: "a.b=1,c=2" from the command line.

    Returns:
        (ExperimentConfig validated for "eval", list of "model.<key>" lines
        naming each model value of the flags that differs from the run's
        and was not used).

    Raises:
        base.ConfigError: naming the offending key or file.
    """
    if isinstance(config_files, str):
        config_files = [config_files]
    stored = load_experiment([params_file], mode=None).model
    requested = load_experiment([params_file, *config_files], params_override, mode=None)
    ignored = [f"model.{key}={value!r} (params.yaml: {getattr(stored, key)!r})"
               for key, value in base.to_dict(requested.model).items()
               if value != getattr(stored, key)]
    return dataclasses.replace(requested, model=stored).validate("eval"), ignored
