"""Crop protocols for evaluation: which crops of an image the network sees.

A protocol is plain data (`CropProtocol`): how the image is resized at each
scale, which boxes are cut from the resized image, whether each box is also
mirrored, and how the crop scores are pooled into one score per class. The
same object gives the boxes as NumPy coordinates (`crop_boxes`, to test and
to draw them); `polynet_tf.evaluation.protocols.make_crops` cuts the crops
themselves as a TensorFlow graph. The protocols live in the data package,
below training's evaluation, the evaluator, serving and the keras-hub
converter, which all read them from here.

Protocols (PolyNet paper, section 5; GoogLeNet, Szegedy et al. 2015, section 10):

- `single`: the central square of `crop_fraction` of the shorter side,
  resized to `crop_size` (what `polynet_tf.data.preprocess_for_eval` does).
- `squash` (the default of the released weights): the whole image squashed to
  floor(331 / 0.875) = 378 x 378, aspect ratio ignored, then the centre
  331x331 (`polynet_tf.data.squash_center_crop`). The protocol of the
  published top-1 81.00 / top-5 95.62 (pretrainedmodels' 81.002 / 95.624,
  its `examples/imagenet_eval.py --do-not-preserve-aspect-ratio`, as the
  pull request that added PolyNet to Cadene/pretrained-models.pytorch, #67,
  records).
- `shorter_side`: shorter side resized to 378 with the aspect ratio kept,
  then the centre 331x331, with torchvision's rounding
  (`polynet_tf.data.shorter_side_center_crop`): the default of that script;
  the same weights score 80.86 / 95.56 under it.
- `pytorchcv`: the same with the shorter side to ceil(331 / 0.875) = 379,
  as `pytorchcv` measured its 80.90 / 95.48 (top-5 error 4.52%).
- `googlenet144`: shorter side resized to 256, 288, 320 and 352; at each scale
  3 squares (left/centre/right, or top/centre/bottom for portrait images), from
  each square the 4 corner and the centre `crop_size` crops and the whole square
  resized to `crop_size`, each also mirrored: 4 x 3 x 6 x 2 = 144 crops,
  softmax scores averaged.
- `polynet_multicrop`: the same 36 crops per scale at 8 scales; per scale and
  class the mean of the top ceil(0.3 x 36) = 11 crop scores, then the mean
  over scales. The paper does not publish its scales: the default
  (shorter side 352 to 576 in steps of 32 for a 331 crop) is our assumption
  (docs/evaluation.md).

Crop order (the `num_crops` axis of `make_crops` and of the scores given to
`pool_scores`): scale-major; within a scale, square (left/top, centre,
right/bottom), then position (top-left, top-right, bottom-left, bottom-right,
centre, whole square), then mirror (unmirrored first).

Coordinates are integer pixels `(y0, x0, y1, x1)`, end exclusive. A centred
window of side `c` in a length `n` starts at `(n - c + 1) // 2`, as in
`polynet_tf.data.preprocessing`. The longer side after a shorter-side resize
to `s` is `floor(longer * s / shorter + 0.5)`. With `rounding="torchvision"`
(`shorter_side`, `pytorchcv`) both follow torchvision's `Resize` and
`CenterCrop`, which the PyTorch references used: the longer side is
`int(longer * s / shorter)` (truncated) and a centred window starts at
`round((n - c) / 2)`, halves rounded to even.
"""

import dataclasses
import math
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from polynet_tf.data import normalization, preprocessing

RESIZE_MODES = ("none", "shorter_side", "squash")
LAYOUTS = ("center", "googlenet")
POOLINGS = ("mean", "topk")
ROUNDINGS = ("nearest", "torchvision")
PROTOCOL_NAMES = ("single", "squash", "shorter_side", "pytorchcv", "googlenet144",
                  "polynet_multicrop")
# The single-crop protocols of the released weights' published figures, the
# one they are served and evaluated with by default first.
RELEASED_PROTOCOLS = ("squash", "shorter_side", "pytorchcv")
# The protocols with one crop per image (the input pipeline, serving, keras-hub).
SINGLE_CROP_PROTOCOLS = ("single",) + RELEASED_PROTOCOLS
# Earlier names, still accepted (with a DeprecationWarning) for the same crop.
PROTOCOL_ALIASES = {
    "released": "shorter_side",
    "released_pytorchcv": "pytorchcv",
    "released_squash": "squash",
    "center_crop": "single",
    "shorter_side_center_crop": "shorter_side",
    "squash_center_crop": "squash",
}


class PublishedFigure(NamedTuple):
    """An accuracy of the released weights and where it was measured."""

    top1: float
    top5: float
    source: str


# ImageNet val accuracy (%) of the released weights under each single-crop
# protocol (docs/evaluation.md).
PUBLISHED_FIGURES = {
    "squash": PublishedFigure(81.002, 95.624, "pretrainedmodels README; its imagenet_eval.py "
                              "--do-not-preserve-aspect-ratio (Cadene/pretrained-models.pytorch "
                              "pull request #67)"),
    "shorter_side": PublishedFigure(80.858, 95.560, "the same weights and script, its default "
                                    "(aspect ratio kept; pull request #67)"),
    "pytorchcv": PublishedFigure(80.90, 95.48, "pytorchcv, polynet-0452 (top-5 error 4.52%), "
                                 "shorter side ceil(331 / 0.875) = 379"),
}


def canonical_name(name: str, stacklevel: int = 3) -> str:
    """The protocol name for `name`, an earlier name mapped with a DeprecationWarning.

    Args:
      name: a name of `PROTOCOL_NAMES` or `PROTOCOL_ALIASES`.
      stacklevel: of the warning.

    Returns:
      The current name (unknown names are returned unchanged, for the
      caller's own error).
    """
    renamed = PROTOCOL_ALIASES.get(name)
    if renamed is None:
        return name
    warnings.warn(
        f"The crop protocol name {name!r} is deprecated: it is {renamed!r} (the same crop). "
        f"The released weights' published figure was measured with 'squash'.",
        DeprecationWarning, stacklevel=stacklevel)
    return renamed


# GoogLeNet's 144-crop scales for a 224 crop (Szegedy et al. 2015, section 10).
GOOGLENET_SCALES = (256, 288, 320, 352)
# Our assumption for the paper's unpublished 8 scales (docs/evaluation.md): the
# GoogLeNet spacing (step 32) starting just above the 331 crop.
POLYNET_MULTICROP_SCALES = tuple(range(352, 577, 32))
POLYNET_TOPK_FRACTION = 0.3
# Positions of the googlenet layout within one square, in crop order.
GOOGLENET_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "center",
                       "whole")


def _centered(length, size, rounding="nearest"):
    if rounding == "torchvision":
        # torchvision CenterCrop: int(round((n - c) / 2.0)), halves to even.
        return int(round((length - size) / 2.0))
    return (length - size + 1) // 2


@dataclasses.dataclass(frozen=True)
class CropProtocol:
    """One crop set and its pooling, as validated data.

    Attributes:
      name: a label for reports.
      crop_size: side of every crop fed to the network (pixels).
      resize: how the image is resized at each scale before cropping:
        "none" (crop the decoded image itself), "shorter_side" (shorter side
        to the scale, aspect ratio kept) or "squash" (to scale x scale,
        aspect ratio ignored).
      scales: the resized shorter side (or squash side) of each scale; empty
        for resize "none".
      layout: "center" (one centred box per scale) or "googlenet" (3 squares
        x 6 boxes per scale).
      crop_fraction: layout "center" only: the box is the central square of
        `crop_fraction` x the shorter side of the resized image, resized to
        `crop_size`. None: a `crop_size` box, not resized.
      mirror: each box is also taken mirrored left-right.
      pooling: "mean" (average of the crop scores) or "topk" (per scale and
        class the mean of the best ceil(topk_fraction x crops per scale)
        scores, then the mean over scales).
      topk_fraction: in (0, 1]; used by "topk" pooling.
      antialias: antialiased bilinear resizing (as PIL and
        `polynet_tf.data.preprocessing` do).
      rounding: "nearest" (longer side rounded to the nearest pixel, centred
        windows start at `(n - c + 1) // 2`) or "torchvision" (longer side
        truncated, centred windows start at `round((n - c) / 2)`, as
        torchvision's `Resize` and `CenterCrop`); layout "center" only.

    Raises:
      ValueError: from the constructor, naming the field, its value and what
        is allowed.
    """

    name: str
    crop_size: int
    resize: str = "shorter_side"
    scales: Tuple[int, ...] = ()
    layout: str = "center"
    crop_fraction: Optional[float] = None
    mirror: bool = False
    pooling: str = "mean"
    topk_fraction: float = 1.0
    antialias: bool = True
    rounding: str = "nearest"

    def __post_init__(self):
        # Frozen: normalise sequences to tuples through object.__setattr__.
        object.__setattr__(self, "scales", tuple(self.scales))
        self._validate()

    def _validate(self):
        def fail(message):
            raise ValueError(f"CropProtocol {self.name!r}: {message}")

        if _not_int(self.crop_size) or self.crop_size < 1:
            fail(f"crop_size must be a positive integer; received {self.crop_size!r}.")
        for field, allowed in (("resize", RESIZE_MODES), ("layout", LAYOUTS),
                               ("pooling", POOLINGS), ("rounding", ROUNDINGS)):
            if getattr(self, field) not in allowed:
                fail(f"{field} must be one of {list(allowed)}; received "
                     f"{getattr(self, field)!r}.")
        if any(_not_int(s) or s < 1 for s in self.scales):
            fail(f"scales must be positive integers; received {self.scales!r}.")
        if self.resize == "none":
            if self.scales:
                fail("resize='none' takes no scales (the image is cropped as decoded); "
                     f"received scales={self.scales!r}.")
            if self.layout != "center" or self.crop_fraction is None:
                fail("resize='none' needs layout='center' and a crop_fraction (the "
                     "decoded image's size is unknown in advance).")
        elif not self.scales:
            fail(f"resize={self.resize!r} needs at least one scale; received scales=().")
        if self.rounding == "torchvision" and self.layout != "center":
            fail("rounding='torchvision' applies to layout='center' only; received "
                 f"layout={self.layout!r}.")
        if self.crop_fraction is not None:
            if self.layout != "center":
                fail("crop_fraction applies to layout='center' only; received "
                     f"layout={self.layout!r}.")
            if isinstance(self.crop_fraction, bool) or not (
                    isinstance(self.crop_fraction, (int, float))
                    and 0.0 < self.crop_fraction <= 1.0):
                fail(f"crop_fraction must be in (0, 1]; received {self.crop_fraction!r}.")
        too_small = [s for s in self.scales if s < self.crop_size]
        if too_small and self.crop_fraction is None:
            fail(f"crop_size {self.crop_size} is larger than scale(s) {too_small}: every "
                 "scale must be >= crop_size; lower crop_size or raise the scales.")
        if isinstance(self.topk_fraction, bool) or not (
                isinstance(self.topk_fraction, (int, float))
                and 0.0 < self.topk_fraction <= 1.0):
            fail(f"topk_fraction must be in (0, 1]; received {self.topk_fraction!r}.")
        if not isinstance(self.mirror, bool) or not isinstance(self.antialias, bool):
            fail(f"mirror and antialias must be True or False; received "
                 f"mirror={self.mirror!r}, antialias={self.antialias!r}.")

    # ---------------------------------------------------------------- counts
    @property
    def num_scales(self) -> int:
        """Scales (1 for resize 'none')."""
        return max(len(self.scales), 1)

    @property
    def boxes_per_scale(self) -> int:
        """Boxes cut from each resized image (before mirroring)."""
        return 18 if self.layout == "googlenet" else 1

    @property
    def crops_per_scale(self) -> int:
        """Crops per scale, mirrors included."""
        return self.boxes_per_scale * (2 if self.mirror else 1)

    @property
    def num_crops(self) -> int:
        """Crops per image."""
        return self.num_scales * self.crops_per_scale

    @property
    def topk(self) -> int:
        """Scores averaged per scale and class: ceil(topk_fraction x crops per scale).

        All of them for "mean" pooling.
        """
        if self.pooling == "mean":
            return self.crops_per_scale
        # The epsilon keeps products like 0.3 * 36 = 10.799999999999999 -> 11
        # and 0.5 * 36 = 18.000000000000004 -> 18.
        return max(1, min(self.crops_per_scale,
                          math.ceil(self.topk_fraction * self.crops_per_scale - 1e-9)))

    def to_dict(self) -> dict:
        """The fields as plain data, plus the derived counts (for reports)."""
        values = dataclasses.asdict(self)
        values["scales"] = list(self.scales)
        values.update(num_crops=self.num_crops, crops_per_scale=self.crops_per_scale,
                      topk=self.topk)
        return values

    # ----------------------------------------------------------------- boxes
    def scaled_size(self, height: int, width: int, scale_index: int) -> Tuple[int, int]:
        """Size `(height, width)` of the image resized for one scale.

        Args:
          height: decoded image height.
          width: decoded image width.
          scale_index: index into `scales` (0 for resize 'none').

        Returns:
          The resized image's `(height, width)`.
        """
        _check_image_size(height, width)
        if self.resize == "none":
            return int(height), int(width)
        scale = self.scales[scale_index]
        if self.resize == "squash":
            return scale, scale
        # torchvision's Resize truncates the longer side (int(long * s / short)).
        half = 0.0 if self.rounding == "torchvision" else 0.5
        if height <= width:
            return scale, int(math.floor(width * scale / height + half))
        return int(math.floor(height * scale / width + half)), scale

    def crop_boxes(self, height: int, width: int) -> np.ndarray:
        """Boxes of every crop, in crop order.

        Args:
          height: decoded image height.
          width: decoded image width.

        Returns:
          int64 `[num_crops, 4]`: `(y0, x0, y1, x1)` in pixels of the image
          resized for that crop's scale (`scaled_size`), end exclusive. A
          mirrored crop has the same box as its unmirrored twin.
        """
        boxes = []
        for scale_index in range(self.num_scales):
            scaled_height, scaled_width = self.scaled_size(height, width, scale_index)
            for box in self._boxes_of_scale(scaled_height, scaled_width):
                boxes.extend([box] * (2 if self.mirror else 1))
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)

    def crop_scale_indices(self) -> np.ndarray:
        """int64 `[num_crops]`: the scale index of each crop."""
        return np.repeat(np.arange(self.num_scales, dtype=np.int64), self.crops_per_scale)

    def crop_mirrored(self) -> np.ndarray:
        """bool `[num_crops]`: whether each crop is mirrored left-right."""
        per_box = [False, True] if self.mirror else [False]
        return np.tile(np.asarray(per_box), self.num_scales * self.boxes_per_scale)

    def crop_layout(self, height: int, width: int) -> "CropLayout":
        """Boxes, scale indices, mirror flags and scaled sizes together (drawing)."""
        return CropLayout(
            boxes=self.crop_boxes(height, width),
            scale_indices=self.crop_scale_indices(),
            mirrored=self.crop_mirrored(),
            scaled_sizes=[self.scaled_size(height, width, i) for i in range(self.num_scales)],
        )

    def _boxes_of_scale(self, height, width):
        if self.layout == "center":
            side = self._center_box_side(min(height, width))
            y0 = _centered(height, side, self.rounding)
            x0 = _centered(width, side, self.rounding)
            return [(y0, x0, y0 + side, x0 + side)]
        square = min(height, width)
        size = self.crop_size
        far, mid = square - size, _centered(square, size)
        in_square = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
        boxes = []
        for sy, sx in _square_offsets(height, width, square):
            boxes.extend((sy + y, sx + x, sy + y + size, sx + x + size) for y, x in in_square)
            boxes.append((sy, sx, sy + square, sx + square))
        return boxes

    def _center_box_side(self, shorter: int) -> int:
        if self.crop_fraction is None:
            return self.crop_size
        # float32 as in preprocessing.center_crop_window, so the boxes agree.
        return max(int(np.float32(shorter) * np.float32(self.crop_fraction)), 1)


class CropLayout(NamedTuple):
    """Everything needed to draw a protocol's crops on one image.

    Attributes:
      boxes: int64 `[num_crops, 4]` `(y0, x0, y1, x1)` on the scaled image.
      scale_indices: int64 `[num_crops]`.
      mirrored: bool `[num_crops]`.
      scaled_sizes: `(height, width)` of the resized image of each scale.
    """

    boxes: np.ndarray
    scale_indices: np.ndarray
    mirrored: np.ndarray
    scaled_sizes: list


def _square_offsets(height, width, square):
    """Top-left corners of the 3 squares: start, centre, end of the longer side."""
    ys = [0, _centered(height, square), height - square]
    xs = [0, _centered(width, square), width - square]
    return list(zip(ys, xs))


def _not_int(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, np.integer))


def _check_image_size(height, width):
    if _not_int(height) or _not_int(width) or height < 1 or width < 1:
        raise ValueError(
            f"Image height and width must be positive integers; received "
            f"height={height!r}, width={width!r}.")


# ------------------------------------------------------------------ registry
def get_protocol(name: str, **overrides) -> CropProtocol:
    """A named protocol, with fields overridden.

    Args:
      name: one of `PROTOCOL_NAMES`: "single", "squash", "shorter_side",
        "pytorchcv", "googlenet144" or "polynet_multicrop" (or an earlier
        name of `PROTOCOL_ALIASES`, with a DeprecationWarning).
      **overrides: `CropProtocol` fields to change, e.g. `crop_size=299`,
        `scales=(320, 352)`, `topk_fraction=0.5`; for "single" also
        `crop_fraction`. For the other protocols a changed `crop_size`
        without `scales` keeps the default scales' ratio to the crop
        (squash and shorter_side: 378/331; pytorchcv: 379/331; GoogLeNet:
        256/224 ... 352/224; PolyNet multi-crop: 352/331 ... 576/331),
        rounded to the nearest pixel.

    Returns:
      A validated `CropProtocol`.

    Raises:
      ValueError: for an unknown name or field, or an invalid value.
    """
    name = canonical_name(name)
    if name not in PROTOCOL_NAMES:
        raise ValueError(
            f"Unknown evaluation protocol {name!r}; choose one of {list(PROTOCOL_NAMES)}.")
    known = {f.name for f in dataclasses.fields(CropProtocol)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"Unknown protocol field(s) {unknown} for {name!r}; allowed: {sorted(known)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None or k == "crop_fraction"}
    if name == "single":
        values = dict(crop_size=preprocessing.RELEASED_CROP_SIZE, resize="none",
                      crop_fraction=preprocessing.DEFAULT_CROP_FRACTION)
    elif name in ("shorter_side", "pytorchcv"):
        # The PyTorch references' protocol: shorter side, torchvision geometry.
        resize = (preprocessing.RELEASED_RESIZE_SIZE if name == "shorter_side"
                  else preprocessing.PYTORCHCV_RESIZE_SIZE)
        values = dict(crop_size=preprocessing.RELEASED_CROP_SIZE, resize="shorter_side",
                      scales=(resize,), rounding="torchvision")
    elif name == "squash":
        values = dict(crop_size=preprocessing.RELEASED_CROP_SIZE, resize="squash",
                      scales=(preprocessing.RELEASED_RESIZE_SIZE,))
    elif name == "googlenet144":
        values = dict(crop_size=224, scales=GOOGLENET_SCALES, layout="googlenet",
                      mirror=True)
    else:
        values = dict(crop_size=preprocessing.RELEASED_CROP_SIZE,
                      scales=POLYNET_MULTICROP_SCALES, layout="googlenet", mirror=True,
                      pooling="topk", topk_fraction=POLYNET_TOPK_FRACTION)
    if name != "single" and "crop_size" in overrides and "scales" not in overrides:
        ratio = overrides["crop_size"] / values["crop_size"]
        values["scales"] = tuple(int(round(s * ratio)) for s in values["scales"])
    values.update(overrides)
    if "scales" in values and values["scales"] is not None:
        values["scales"] = tuple(values["scales"])
    return CropProtocol(name=name, **values)


def preprocess_single_crop(
    image_bytes,
    protocol: CropProtocol,
    *,
    normalize: bool = True,
    mean: Sequence[float] = normalization.IMAGENET_MEAN,
    std: Sequence[float] = normalization.IMAGENET_STD,
):
    """The one crop of a single-crop protocol, from one encoded image.

    The same crop as `make_crops` on the decoded image (the JPEG window of
    "single" is decoded alone), as a TensorFlow function for `tf.data`.

    Args:
      image_bytes: scalar string tensor, one encoded image.
      protocol: a `CropProtocol` with one crop per image (one of
        `SINGLE_CROP_PROTOCOLS`, with any sizes).
      normalize: apply `normalize_image`; False returns RGB in [0, 255].
      mean: normalisation mean on the [0, 1] scale.
      std: normalisation standard deviation on the [0, 1] scale.

    Returns:
      float32 `[crop_size, crop_size, 3]`.

    Raises:
      ValueError: a protocol with several crops, or a single crop this
        function does not cut (naming the protocol's fields).
    """
    common = dict(antialias=protocol.antialias, normalize=normalize, mean=mean, std=std)
    if protocol.num_crops != 1:
        raise ValueError(
            f"CropProtocol {protocol.name!r} takes {protocol.num_crops} crops per image; the "
            "input pipeline cuts one: use a single-crop protocol "
            f"({', '.join(SINGLE_CROP_PROTOCOLS)}) or the evaluator.")
    if protocol.resize == "none":
        return preprocessing.preprocess_for_eval(
            image_bytes, protocol.crop_size, protocol.crop_fraction, **common)
    if protocol.crop_fraction is None and protocol.resize == "squash":
        return preprocessing.squash_center_crop(
            image_bytes, protocol.scales[0], protocol.crop_size, **common)
    if (protocol.crop_fraction is None and protocol.resize == "shorter_side"
            and protocol.rounding == "torchvision"):
        return preprocessing.shorter_side_center_crop(
            image_bytes, protocol.scales[0], protocol.crop_size, **common)
    raise ValueError(
        f"CropProtocol {protocol.name!r} (resize={protocol.resize!r}, "
        f"rounding={protocol.rounding!r}, crop_fraction={protocol.crop_fraction!r}) is not a "
        "single crop the input pipeline cuts: use resize='none' with a crop_fraction, "
        "'squash', or 'shorter_side' with rounding='torchvision'.")
