"""`InputContract`: how an image becomes a model's input, as one frozen record.

One record answers every question about a model's input: the input size
(`image_size`), the single-crop protocol (`polynet_tf.data.protocols`: how the
image is resized, to which side or which central fraction is kept, with which
rounding), the interpolation, and the normalisation (RGB in [0, 255] scaled to
[0, 1], then `(x - mean) / std`). It is resolved once from wherever the truth
is (`resolve_input_contract`: explicit options, a run's evaluation data, a
weights file's metadata, a preset's published weights) and handed unchanged
to the input pipeline, the evaluator, the serving signatures, the keras-hub
image converter and fine-tuning: each of them cuts its crop from
`crop_protocol()` and normalises with `mean` / `std`.

Like timm's `resolve_data_config`, but for one crop: multi-crop evaluation
(`googlenet144`, `polynet_multicrop`) is a `CropProtocol` of the evaluator.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from polynet_tf.data import normalization, preprocessing, protocols

INTERPOLATIONS = ("bilinear",)
# The raw pixel range every consumer takes: decoded RGB, as `uint8` or float.
VALUE_RANGE = (0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class InputContract:
    """How an encoded or decoded RGB image becomes the model's input.

    Attributes:
      protocol: the single-crop protocol (`protocols.SINGLE_CROP_PROTOCOLS`):
        "single" (central square of `crop_fraction` of the shorter side,
        resized to `image_size`), "squash" (the whole image resized to
        `resize_size` x `resize_size`, aspect ratio ignored, then the centre
        `image_size` crop: the released weights' published protocol),
        "shorter_side" (shorter side to `resize_size`, aspect ratio kept,
        centre crop, torchvision's rounding) or "pytorchcv" (the same as
        pytorchcv measured it, 379 -> 331 by default). Earlier names
        (`protocols.PROTOCOL_ALIASES`) are accepted with a DeprecationWarning.
      image_size: the model's input height and width in pixels.
      resize_size: the side the resizing protocols resize to; None: the
        protocol's ratio at `image_size` (378 / 331, or 379 / 331 for
        "pytorchcv"). Not used by "single".
      crop_fraction: "single" only: the kept fraction of the shorter side;
        None: 0.875.
      interpolation: resize method ("bilinear").
      antialias: antialiased resizing when shrinking (as PIL does).
      mean: per-channel RGB mean on the [0, 1] scale.
      std: per-channel RGB standard deviation on the [0, 1] scale.

    Raises:
      ValueError: from the constructor, naming the field, its value and what
        is allowed.
    """

    protocol: str = "single"
    image_size: int = 299
    resize_size: Optional[int] = None
    crop_fraction: Optional[float] = None
    interpolation: str = "bilinear"
    antialias: bool = True
    mean: Tuple[float, float, float] = normalization.IMAGENET_MEAN
    std: Tuple[float, float, float] = normalization.IMAGENET_STD

    def __post_init__(self):
        def set_field(name, value):  # frozen: fields are resolved here, once
            object.__setattr__(self, name, value)

        set_field("protocol", protocols.canonical_name(self.protocol, stacklevel=4))
        if self.protocol not in protocols.SINGLE_CROP_PROTOCOLS:
            raise ValueError(
                f"InputContract.protocol must be one of {list(protocols.SINGLE_CROP_PROTOCOLS)} "
                f"(one crop per image); received {self.protocol!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"InputContract.interpolation must be one of "
                             f"{list(INTERPOLATIONS)}; received {self.interpolation!r}.")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (not isinstance(values, (list, tuple)) or len(values) != 3
                    or not all(isinstance(v, (int, float)) for v in values)):
                raise ValueError(f"InputContract.{name} must be 3 numbers (R, G, B); "
                                 f"received {name}={values!r}.")
            set_field(name, tuple(float(v) for v in values))
        if min(self.std) <= 0:
            raise ValueError(f"InputContract.std entries must be positive; received {self.std!r}.")
        if self.protocol == "single":
            if self.resize_size is not None:
                raise ValueError("InputContract.resize_size applies to the resizing protocols "
                                 f"{list(protocols.RELEASED_PROTOCOLS)}, not 'single' (it keeps "
                                 "crop_fraction of the shorter side).")
            if self.crop_fraction is None:
                set_field("crop_fraction", preprocessing.DEFAULT_CROP_FRACTION)
        elif self.crop_fraction is not None:
            raise ValueError(f"InputContract.crop_fraction applies to 'single' only; protocol "
                             f"{self.protocol!r} resizes to resize_size.")
        crop = self._crop_protocol()  # validates the sizes, naming the field
        if self.protocol != "single":
            set_field("resize_size", crop.scales[0])

    def _crop_protocol(self):
        overrides = dict(crop_size=self.image_size, antialias=self.antialias)
        if self.protocol == "single":
            overrides["crop_fraction"] = self.crop_fraction
        elif self.resize_size is not None:
            overrides["scales"] = (self.resize_size,)
        return protocols.get_protocol(self.protocol, **overrides)

    # ------------------------------------------------------------- derived
    def crop_protocol(self) -> protocols.CropProtocol:
        """The evaluator's one-crop `CropProtocol` of this contract."""
        return self._crop_protocol()

    @property
    def resize(self) -> str:
        """How the image is resized before the crop: "none", "squash" or "shorter_side"."""
        return self._crop_protocol().resize

    @property
    def rounding(self) -> str:
        """"nearest" or "torchvision" (see `protocols.CropProtocol`)."""
        return self._crop_protocol().rounding

    @property
    def value_range(self) -> Tuple[float, float]:
        """The range of the raw RGB pixels the contract takes, (0, 255)."""
        return VALUE_RANGE

    @property
    def published_figure(self) -> Optional[protocols.PublishedFigure]:
        """The released weights' accuracy under this protocol at 331, if published."""
        if self.image_size != preprocessing.RELEASED_CROP_SIZE:
            return None
        figure = protocols.PUBLISHED_FIGURES.get(self.protocol)
        default = protocols.get_protocol(self.protocol) if figure else None
        return figure if default and default.scales == (self.resize_size,) else None

    def describe(self) -> str:
        """One line for reports, e.g. "squash 378 -> 331, ImageNet mean/std"."""
        if self.protocol == "single":
            how = f"single: central {self.crop_fraction:g} of the shorter side -> "
        else:
            how = f"{self.protocol}: {self.resize_size} -> "
        return f"{how}{self.image_size}x{self.image_size}"

    # ---------------------------------------------------------- TensorFlow
    def preprocess(self, image_bytes, normalize: bool = True):
        """One encoded image -> float32 `[image_size, image_size, 3]` (a `tf.data` map).

        Args:
          image_bytes: scalar string tensor.
          normalize: False returns the crop as RGB in [0, 255].
        """
        return protocols.preprocess_single_crop(
            image_bytes, self._crop_protocol(), normalize=normalize, mean=self.mean,
            std=self.std)

    def normalize(self, images):
        """`(images / 255 - mean) / std` in float32 (`normalization.normalize_image`)."""
        return normalization.normalize_image(images, self.mean, self.std)

    # --------------------------------------------------------------- data
    def to_dict(self) -> Dict[str, Any]:
        """Plain data (YAML / JSON / SavedModel metadata), resolved fields included."""
        values = dataclasses.asdict(self)
        values.update(mean=list(self.mean), std=list(self.std), resize=self.resize,
                      rounding=self.rounding, value_range=list(VALUE_RANGE))
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InputContract":
        """The contract of `to_dict()` output (derived entries are checked, not read).

        Raises:
          ValueError: an unknown key, or a derived entry that disagrees.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        derived = {"resize", "rounding", "value_range"}
        unknown = sorted(set(values) - known - derived)
        if unknown:
            raise ValueError(f"Unknown InputContract field(s) {unknown}; allowed: {sorted(known)}.")
        contract = cls(**{k: v for k, v in values.items() if k in known})
        mismatched = [k for k in sorted(derived & set(values))
                      if _plain(values[k]) != _plain(contract.to_dict()[k])]
        if mismatched:
            raise ValueError(f"InputContract entries {mismatched} disagree with the protocol "
                             f"{contract.protocol!r}: {values!r}.")
        return contract


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


_OVERRIDABLE = ("protocol", "image_size", "resize_size", "crop_fraction", "interpolation",
                "antialias", "mean", "std")


def resolve_input_contract(
    *,
    data_config=None,
    metadata: Optional[Mapping[str, Any]] = None,
    pretrained: Optional[InputContract] = None,
    default: Optional[InputContract] = None,
    **explicit,
) -> InputContract:
    """The one `InputContract` of a model, from wherever the truth is.

    Precedence, highest first (timm's `resolve_data_config` order):
    `explicit` options (flags, arguments) > `data_config` (a run's
    evaluation data, its `params.yaml`) > `metadata` (a weights file's or
    an export's recorded contract) > `pretrained` (a preset's published
    weights) > `default` (or `InputContract()`).

    A field of the chosen base that belongs to its protocol (`resize_size`,
    `crop_fraction`) is kept only while the protocol stays the same; a new
    `image_size` without a `resize_size` keeps the base's resize-to-crop
    ratio (rounded to the nearest pixel).

    Args:
      data_config: a `DataConfig` (its `input_contract()`).
      metadata: `InputContract.to_dict()` output.
      pretrained: a preset's published-weights contract.
      default: the contract when no other source is given.
      **explicit: `InputContract` fields; None values are ignored.

    Returns:
      A validated `InputContract`.

    Raises:
      ValueError: an unknown field, or a contract that does not hold.
    """
    unknown = sorted(set(explicit) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"Unknown InputContract option(s) {unknown}; allowed: "
                         f"{list(_OVERRIDABLE)}.")
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if data_config is not None:
        base = data_config.input_contract()
    elif metadata:
        base = InputContract.from_dict(metadata)
    else:
        base = pretrained or default or InputContract()
    if not explicit:
        return base
    values = dataclasses.asdict(base)
    if "protocol" in explicit:
        explicit["protocol"] = protocols.canonical_name(explicit["protocol"], stacklevel=3)
        if explicit["protocol"] != base.protocol:
            values.update(resize_size=None, crop_fraction=None)
    size = explicit.get("image_size")
    if (size and size != base.image_size and "resize_size" not in explicit
            and values["resize_size"] is not None):
        values["resize_size"] = int(round(values["resize_size"] * size / base.image_size))
    values.update(explicit)
    return InputContract(**values)
