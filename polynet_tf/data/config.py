"""`DataConfig`: every knob of the input pipeline, as plain validated data.

The training engine nests this dataclass in its YAML configuration, so every
field is a simple type (str, int, float, bool, None, or a list of floats) and
`to_dict()` / `from_dict()` round-trip through YAML or JSON.
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

from polynet_tf.data import normalization, protocols
from polynet_tf.data.input_contract import InputContract

ON_ERROR_POLICIES = ("fail", "skip")
# The evaluation protocols (one crop per image) and their earlier names.
EVAL_PROTOCOLS = protocols.SINGLE_CROP_PROTOCOLS
COMPRESSION_TYPES = ("", "GZIP", "ZLIB")


@dataclasses.dataclass
class DataConfig:
    """Configuration of one input pipeline (training or evaluation).

    Exactly one source is set: `file_pattern` (TFRecord shards in the ImageNet
    `tf.train.Example` format) or `tfds_name` (a TFDS image-classification
    dataset).

    Attributes:
      file_pattern: glob of TFRecord shards; several globs may be joined with
        commas. Files are sorted, so the order does not depend on the file
        system.
      compression_type: "" (plain TFRecord), "GZIP" or "ZLIB". Corrupt or
        truncated files follow `on_error` either way (named with the index of
        the first unreadable record); a compressed file is then read a second
        time, once per process, to tell a bad record from its end.
      tfds_name: TFDS dataset name, e.g. "imagenet2012" or "cifar10".
      tfds_split: TFDS split, slicing allowed, e.g. "train[:90%]".
      tfds_data_dir: TFDS data directory ("" = TFDS default).
      tfds_manual_dir: if set, the TFDS dataset is first prepared from the files
        in this directory (imagenet2012 needs its tar files there); nothing is
        downloaded.
      tfds_image_key: feature holding the image.
      tfds_label_key: feature holding the integer label.
      tfds_filename_key: feature naming the image in error messages, if the
        dataset has it.
      is_training: training (random crop, flip, shuffle, repeat) or evaluation.
      image_size: output height and width in pixels (299, 331, ...).
      global_batch_size: batch size summed over all replicas.
      drop_remainder: drop the last partial batch; None means `is_training`.
      label_offset: subtracted from stored labels. None: read it from the
        `class_index.json` next to the shards, else 0. TensorFlow's ImageNet
        tools store labels 1..1000: use 1 for their shards.
      num_classes: labels outside [0, num_classes) stop the pipeline with an
        error naming the file. None: the number of classes of the class index
        (or the TFDS dataset), if known.
      num_epochs: passes over the data; None repeats training data forever and
        reads evaluation data once.
      shuffle_buffer_size: records held by the shuffle buffer (training only).
      cache: keep this worker's raw records in memory after the first pass.
      seed: base seed of file order, shuffle and augmentation. None draws one.
      deterministic: same seed, same files, same config give identical batches
        (order-preserving parallelism); otherwise elements may be reordered for
        speed.
      cycle_length: files read in parallel by the interleave.
      block_length: consecutive records taken from each file in turn.
      private_threadpool_size: tf.data thread pool size (0: TensorFlow's default).
      on_error: "fail" stops at the first corrupt record or undecodable image,
        naming the file and record index; "skip" drops it, reports it on
        stderr and counts it in `PipelineStats`.
      area_range: training crop area as a fraction of the image.
      aspect_ratio_range: training crop width / height.
      max_attempts: tries of the crop sampler before the centre-crop fallback.
      random_flip: horizontal flip with probability 0.5 (training).
      eval_protocol: the single-crop protocol of evaluation
        (`polynet_tf.data.protocols`): "single" (central square of
        `crop_fraction` of the shorter side, resized to `image_size`),
        "squash" (resize to `resize_size` x `resize_size` ignoring the aspect
        ratio, then the central `image_size` crop: the released weights'
        published protocol), "shorter_side" (shorter side to `resize_size`,
        aspect kept, then the central crop, as torchvision's Resize +
        CenterCrop) or "pytorchcv" (the same, 379 -> 331 by default). Earlier
        names ("released", "released_squash", "released_pytorchcv",
        "center_crop", ...) are accepted and mapped (deprecated).
      crop_fraction: fraction of the shorter side kept by "single".
      resize_size: the side "squash", "shorter_side" and "pytorchcv" resize
        to; None: the protocol's ratio at `image_size` (378 / 331, or
        379 / 331 for "pytorchcv").
      eval_antialias: antialiased (PIL-like) resizing for evaluation.
      mean: per-channel RGB mean on the [0, 1] scale.
      std: per-channel RGB standard deviation on the [0, 1] scale.
      randaugment_num_ops: RandAugment operations per image (training; 0:
        off), `keras.layers.RandAugment` on the [0, 255] crop.
      randaugment_magnitude: RandAugment strength in [0, 1] (Keras's
        `factor`).
      random_erasing_probability: probability in [0, 1] that a box of the
        image is filled with the mean colour (training; 0: off).
      random_erasing_scale: [min, max] in (0, 1] of Keras's RandomErasing
        `scale`: the box's width and height are sqrt(u) of the image's, u
        drawn from this range for each.
      mixup_alpha: MixUp's Beta(alpha, alpha) (training; 0: off; > 0).
        MixUp or CutMix make the labels soft targets `[batch, num_classes]`.
      cutmix_alpha: CutMix's Beta(alpha, alpha) of the kept area, in (0, 1]
        (Keras's bound; 0: off). The label weight is the area actually kept.
      mix_probability: probability in [0, 1] that a batch is mixed (MixUp or
        CutMix on).
      cutmix_switch_probability: with both on, the probability in [0, 1] that
        a mixed batch uses CutMix rather than MixUp.
    """

    file_pattern: str = ""
    compression_type: str = ""
    tfds_name: str = ""
    tfds_split: str = "train"
    tfds_data_dir: str = ""
    tfds_manual_dir: str = ""
    tfds_image_key: str = "image"
    tfds_label_key: str = "label"
    tfds_filename_key: str = "file_name"
    is_training: bool = True
    image_size: int = 299
    global_batch_size: int = 32
    drop_remainder: Optional[bool] = None
    label_offset: Optional[int] = None
    num_classes: Optional[int] = None
    num_epochs: Optional[int] = None
    shuffle_buffer_size: int = 10_000
    cache: bool = False
    seed: Optional[int] = None
    deterministic: bool = False
    cycle_length: int = 16
    block_length: int = 1
    private_threadpool_size: int = 0
    on_error: str = "fail"
    area_range: List[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    aspect_ratio_range: List[float] = dataclasses.field(
        default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0]
    )
    max_attempts: int = 10
    random_flip: bool = True
    eval_protocol: str = "single"
    crop_fraction: float = 0.875
    resize_size: Optional[int] = None
    eval_antialias: bool = True
    mean: List[float] = dataclasses.field(
        default_factory=lambda: list(normalization.IMAGENET_MEAN)
    )
    std: List[float] = dataclasses.field(
        default_factory=lambda: list(normalization.IMAGENET_STD)
    )
    randaugment_num_ops: int = 0
    randaugment_magnitude: float = 0.5
    random_erasing_probability: float = 0.0
    random_erasing_scale: List[float] = dataclasses.field(default_factory=lambda: [0.02, 0.33])
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_probability: float = 1.0
    cutmix_switch_probability: float = 0.5

    def __post_init__(self):
        self.eval_protocol = protocols.canonical_name(self.eval_protocol, stacklevel=4)

    @property
    def should_drop_remainder(self) -> bool:
        """`drop_remainder`, with None resolved to `is_training`."""
        if self.drop_remainder is None:
            return self.is_training
        return self.drop_remainder

    def validate(self) -> "DataConfig":
        """Checks every field.

        Returns:
          self, so that `DataConfig(...).validate()` can be chained.

        Raises:
          ValueError: naming the first invalid field, its value and what is
            allowed.
        """
        if bool(self.file_pattern) == bool(self.tfds_name):
            raise ValueError(
                "Set exactly one data source: DataConfig.file_pattern (TFRecord "
                "shards) or DataConfig.tfds_name (a TFDS dataset); received "
                f"file_pattern={self.file_pattern!r}, tfds_name={self.tfds_name!r}."
            )
        _check_choice("compression_type", self.compression_type, COMPRESSION_TYPES)
        _check_choice("on_error", self.on_error, ON_ERROR_POLICIES)
        _check_choice("eval_protocol", self.eval_protocol, EVAL_PROTOCOLS)
        for name in ("image_size", "global_batch_size", "shuffle_buffer_size",
                     "cycle_length", "block_length", "max_attempts"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.resize_size is not None:
            _check_int("resize_size", self.resize_size, minimum=1)
        _check_int("private_threadpool_size", self.private_threadpool_size, minimum=0)
        for name in ("label_offset", "seed"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=None)
        for name in ("num_classes", "num_epochs"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("is_training", "cache", "deterministic", "random_flip",
                     "eval_antialias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"DataConfig.{name} must be True or False; received "
                    f"{name}={getattr(self, name)!r}."
                )
        if self.drop_remainder is not None and not isinstance(self.drop_remainder, bool):
            raise ValueError(
                "DataConfig.drop_remainder must be True, False or None; received "
                f"drop_remainder={self.drop_remainder!r}."
            )
        if self.deterministic and self.seed is None:
            raise ValueError(
                "DataConfig.deterministic=True needs a seed: set DataConfig.seed "
                "to an integer."
            )
        _check_range("area_range", self.area_range, low=0.0, high=1.0)
        _check_range("aspect_ratio_range", self.aspect_ratio_range, low=0.0, high=None)
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(
                "DataConfig.crop_fraction must be in (0, 1]; received "
                f"crop_fraction={self.crop_fraction!r}."
            )
        if (self.eval_protocol != "single" and self.resize_size is not None
                and self.resize_size < self.image_size):
            raise ValueError(
                "DataConfig.resize_size must be >= image_size for "
                f"eval_protocol={self.eval_protocol!r}; received resize_size="
                f"{self.resize_size}, image_size={self.image_size}."
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(
                    f"DataConfig.{name} must be 3 numbers (R, G, B); received "
                    f"{name}={values!r}."
                )
        if min(self.std) <= 0:
            raise ValueError(f"DataConfig.std entries must be positive; received {self.std!r}.")
        self._validate_augmentation()
        return self

    @property
    def mixes_labels(self) -> bool:
        """True when MixUp or CutMix make the labels soft targets (training only)."""
        return self.is_training and bool(self.mixup_alpha or self.cutmix_alpha)

    def _validate_augmentation(self) -> None:
        _check_int("randaugment_num_ops", self.randaugment_num_ops, minimum=0)
        for name in ("randaugment_magnitude", "random_erasing_probability",
                     "mix_probability", "cutmix_switch_probability", "cutmix_alpha"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("mixup_alpha", self.mixup_alpha, 0.0, None)
        _check_range("random_erasing_scale", self.random_erasing_scale, low=0.0, high=1.0)

    def input_contract(self) -> InputContract:
        """The `InputContract` of this evaluation data.

        `eval_protocol` at `image_size` with this config's `crop_fraction`
        ("single") or `resize_size` (the resizing protocols),
        `eval_antialias`, `mean` and `std`: what the input pipeline,
        training's evaluation, `polynet_tf.loading` and serving feed a model
        trained on this data with.

        Raises:
          ValueError: the crop does not fit `resize_size`.
        """
        single = self.eval_protocol == "single"
        return InputContract(
            protocol=self.eval_protocol, image_size=int(self.image_size),
            resize_size=None if single else self.resize_size,
            crop_fraction=self.crop_fraction if single else None,
            antialias=self.eval_antialias, mean=tuple(self.mean), std=tuple(self.std))

    def eval_crop_protocol(self) -> protocols.CropProtocol:
        """The one-crop `CropProtocol` of `input_contract()`."""
        return self.input_contract().crop_protocol()

    def to_dict(self) -> Dict[str, Any]:
        """Returns the fields as a dict of simple types (YAML/JSON ready)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        """Builds and validates a config from a mapping of field values.

        Args:
          values: field name -> value; missing fields keep their defaults.

        Returns:
          A validated `DataConfig`.

        Raises:
          ValueError: for an unknown key (the allowed ones are listed) or an
            invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown DataConfig field(s) {unknown}; allowed fields are "
                f"{sorted(known)}."
            )
        kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
        return cls(**kwargs).validate()


def _check_choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"DataConfig.{name} must be one of {list(allowed)}; received "
            f"{name}={value!r}."
        )


def _check_int(name: str, value: Any, minimum: Optional[int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"DataConfig.{name} must be an integer; received {name}={value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(
            f"DataConfig.{name} must be >= {minimum}; received {name}={value!r}."
        )


def _check_number(name: str, value: Any, low: float, high: Optional[float]) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not low <= value <= (float("inf") if high is None else high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(
            f"DataConfig.{name} must be a number {allowed}; received {name}={value!r}."
        )


def _check_range(name: str, value: Any, low: float, high: Optional[float]) -> None:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if ok:
        lo, hi = value
        ok = low < lo <= hi and (high is None or hi <= high)
    if not ok:
        upper = "" if high is None else f" <= {high}"
        raise ValueError(
            f"DataConfig.{name} must be two numbers [min, max] with {low} < min "
            f"<= max{upper}; received {name}={value!r}."
        )
