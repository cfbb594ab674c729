"""Image preprocessing for training and evaluation, one encoded image at a time.

Each function takes one encoded image (a scalar string tensor: JPEG, or PNG,
GIF, BMP, WebP for TFDS sources) and returns a float32 `[height, width, 3]`
image, normalised like `preprocess_input` unless `normalize=False` (then RGB in
[0, 255]). They are pure TensorFlow, so they run in `tf.data`, inside
`tf.function`, and in an exported serving graph.

JPEGs are decoded with `tf.io.decode_and_crop_jpeg`, which decodes only the
crop window (TF Model Garden's approach). Other formats are decoded whole and
then cropped.

Training (the PolyNet paper, section 4, following Inception): a random crop
covering 8%-100% of the area with width/height in [3/4, 4/3], sampled by
`tf.image.stateless_sample_distorted_bounding_box` in up to 10 attempts;
when every attempt fails, a centred crop of the largest allowed aspect ratio
(whole image if its own aspect ratio is allowed); bilinear resize; horizontal
flip with probability 0.5.
"""

from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from polynet_tf.data import normalization

ImageSize = Union[int, Sequence[int]]

DEFAULT_AREA_RANGE = (0.08, 1.0)
DEFAULT_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_CROP_FRACTION = 0.875
# The released PolyNet weights' protocols resize to floor(331 / 0.875) = 378
# (pretrainedmodels' imagenet_eval.py: squashed, or shorter side) and cut the
# centre 331x331; pytorchcv resizes the shorter side to ceil(331 / 0.875) = 379.
RELEASED_RESIZE_SIZE = 378
PYTORCHCV_RESIZE_SIZE = 379
RELEASED_CROP_SIZE = 331


# The arguments every function below shares, written once (`_shared_args`).
_OUTPUT_ARGS = """normalize: apply `normalize_image`; False returns RGB in [0, 255].
      mean: normalisation mean on the [0, 1] scale.
      std: normalisation standard deviation on the [0, 1] scale."""
_RESIZE_ARGS = """antialias: antialiased bilinear resize (as PIL does when shrinking).
      """ + _OUTPUT_ARGS


def _shared_args(function):
    """Fills `{output_args}` / `{resize_args}` in a docstring with the shared text."""
    if function.__doc__:  # None under python -OO
        function.__doc__ = function.__doc__.format(output_args=_OUTPUT_ARGS,
                                                   resize_args=_RESIZE_ARGS)
    return function


def _height_width(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            "image_size must be a positive int or (height, width); received "
            f"image_size={image_size!r}."
        )
    return size


def _new_seed() -> tf.Tensor:
    return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)


def _decode_cropped(image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes the window `window_fn(shape) -> [y, x, h, w]` of an image.

    JPEGs decode only the window; other formats are decoded and then sliced.
    """

    def from_jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes)
        return tf.io.decode_and_crop_jpeg(image_bytes, window_fn(shape), channels=3)

    def from_other_format():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        window = window_fn(tf.shape(image))
        return tf.slice(image, tf.stack([window[0], window[1], 0]),
                        tf.stack([window[2], window[3], 3]))

    image = tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other_format)
    image.set_shape([None, None, 3])
    return image


def sample_crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    area_range: Sequence[float] = DEFAULT_AREA_RANGE,
    aspect_ratio_range: Sequence[float] = DEFAULT_ASPECT_RATIO_RANGE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> tf.Tensor:
    """Samples a random-area, random-aspect crop window (Inception style).

    Args:
      image_shape: `[height, width, ...]` of the image (int tensor).
      seed: int shape-[2] tensor; the same seed gives the same window.
      area_range: allowed crop area as a fraction of the image area.
      aspect_ratio_range: allowed crop width / height.
      max_attempts: tries before falling back.

    Returns:
      int32 `[y, x, height, width]`, the argument `decode_and_crop_jpeg` takes.
      When every attempt fails (`stateless_sample_distorted_bounding_box` then
      returns the whole image), a centred crop with the aspect ratio clipped
      into `aspect_ratio_range`.
    """
    image_shape = tf.cast(image_shape, tf.int32)
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]], dtype=tf.float32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([image_shape[:2], [3]], axis=0),
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=area_range[0],
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
    failed = tf.reduce_all(tf.equal(size[:2], image_shape[:2]))
    return tf.cond(
        failed,
        lambda: _aspect_clipped_center_window(image_shape, aspect_ratio_range),
        lambda: sampled,
    )


def _aspect_clipped_center_window(image_shape, aspect_ratio_range) -> tf.Tensor:
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    aspect = width / height
    low, high = aspect_ratio_range
    crop_width = tf.where(aspect > high, tf.round(height * high), width)
    crop_height = tf.where(aspect < low, tf.round(width / low), height)
    crop_height = tf.clip_by_value(tf.cast(crop_height, tf.int32), 1, image_shape[0])
    crop_width = tf.clip_by_value(tf.cast(crop_width, tf.int32), 1, image_shape[1])
    return tf.stack([
        (image_shape[0] - crop_height) // 2,
        (image_shape[1] - crop_width) // 2,
        crop_height,
        crop_width,
    ])


def center_crop_window(image_shape: tf.Tensor, crop_fraction: float) -> tf.Tensor:
    """Central square of side `crop_fraction * shorter side` as `[y, x, h, w]`."""
    image_shape = tf.cast(image_shape, tf.int32)
    shorter = tf.minimum(image_shape[0], image_shape[1])
    side = tf.maximum(tf.cast(tf.cast(shorter, tf.float32) * crop_fraction, tf.int32), 1)
    return tf.stack([
        (image_shape[0] - side + 1) // 2,
        (image_shape[1] - side + 1) // 2,
        side,
        side,
    ])


def _finish(image, normalize, mean, std):
    if normalize:
        return normalization.normalize_image(image, mean, std)
    return tf.cast(image, tf.float32)


@_shared_args
def preprocess_for_train(
    image_bytes: tf.Tensor,
    image_size: ImageSize,
    seed: Optional[tf.Tensor] = None,
    *,
    area_range: Sequence[float] = DEFAULT_AREA_RANGE,
    aspect_ratio_range: Sequence[float] = DEFAULT_ASPECT_RATIO_RANGE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    random_flip: bool = True,
    normalize: bool = True,
    mean: Sequence[float] = normalization.IMAGENET_MEAN,
    std: Sequence[float] = normalization.IMAGENET_STD,
) -> tf.Tensor:
    """Random-area crop, bilinear resize and random horizontal flip.

    Args:
      image_bytes: scalar string tensor, one encoded image.
      image_size: output size, an int (square) or `(height, width)`.
      seed: int shape-[2] tensor making the result a pure function of
        `(image_bytes, seed)`; None draws a random seed.
      area_range: crop area as a fraction of the image area.
      aspect_ratio_range: crop width / height.
      max_attempts: crop sampler attempts before the centred fallback.
      random_flip: flip left-right with probability 0.5.
      {output_args}

    Returns:
      float32 `[height, width, 3]`.
    """
    height, width = _height_width(image_size)
    seed = _new_seed() if seed is None else tf.cast(seed, tf.int64)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _decode_cropped(
        image_bytes,
        lambda shape: sample_crop_window(
            shape, crop_seed, area_range, aspect_ratio_range, max_attempts),
    )
    if random_flip:
        # Flipping the uint8 crop moves fewer bytes than flipping the float
        # output; bilinear resizing commutes with a horizontal flip (up to
        # float rounding).
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.image.resize(image, [height, width], method="bilinear")
    return _finish(image, normalize, mean, std)


@_shared_args
def preprocess_for_eval(
    image_bytes: tf.Tensor,
    image_size: ImageSize,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    *,
    antialias: bool = True,
    normalize: bool = True,
    mean: Sequence[float] = normalization.IMAGENET_MEAN,
    std: Sequence[float] = normalization.IMAGENET_STD,
) -> tf.Tensor:
    """Central square crop of `crop_fraction` of the shorter side, resized.

    Equivalent to resizing the shorter side to `image_size / crop_fraction` and
    taking the central `image_size` crop (the usual "resize 256, crop 224").

    Args:
      image_bytes: scalar string tensor, one encoded image.
      image_size: output size, an int (square) or `(height, width)`.
      crop_fraction: side of the crop relative to the shorter image side.
      {resize_args}

    Returns:
      float32 `[height, width, 3]`.

    Raises:
      ValueError: if `crop_fraction` is not in (0, 1].
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1]; received {crop_fraction!r}.")
    height, width = _height_width(image_size)
    image = _decode_cropped(image_bytes, lambda shape: center_crop_window(shape, crop_fraction))
    image = tf.image.resize(image, [height, width], method="bilinear", antialias=antialias)
    return _finish(image, normalize, mean, std)


def shorter_side_shape(image_shape: tf.Tensor, size: int, truncate: bool = True) -> tf.Tensor:
    """`[height, width]` after resizing the shorter side to `size`, aspect kept.

    Args:
      image_shape: `[height, width, ...]` (int tensor).
      size: the new shorter side.
      truncate: the longer side is `int(longer * size / shorter)`, as
        torchvision's `Resize`; False rounds it to the nearest pixel.

    Returns:
      int32 `[2]`. The shorter side is exactly `size` (a square stays square).
    """
    shape = tf.cast(image_shape[:2], tf.float64)
    shorter = tf.reduce_min(shape)
    longer = tf.floor(shape * size / shorter + (0.0 if truncate else 0.5))
    return tf.where(shape == shorter, size, tf.cast(longer, tf.int32))


def torchvision_center_offset(length: tf.Tensor, size) -> tf.Tensor:
    """Start of a centred window as torchvision's `CenterCrop`: round((n - c) / 2).

    `tf.round` rounds halves to even, as Python's `round` that torchvision uses.
    """
    return tf.cast(tf.round(tf.cast(length - size, tf.float64) / 2.0), tf.int32)


@_shared_args
def shorter_side_center_crop(
    image_bytes: tf.Tensor,
    resize_size: int = RELEASED_RESIZE_SIZE,
    crop_size: int = RELEASED_CROP_SIZE,
    *,
    antialias: bool = True,
    normalize: bool = True,
    mean: Sequence[float] = normalization.IMAGENET_MEAN,
    std: Sequence[float] = normalization.IMAGENET_STD,
) -> tf.Tensor:
    """Shorter side to `resize_size` keeping the aspect ratio, then the centre crop.

    torchvision's `Resize(resize_size)` then `CenterCrop(crop_size)`: the
    shorter side becomes `resize_size` (the longer side truncated to whole
    pixels), then the central `crop_size` square is kept, starting at
    `round((n - crop_size) / 2)`. The `shorter_side` protocol (378 -> 331:
    the released weights score 80.86 / 95.56) and `pytorchcv` (379 -> 331:
    80.90 / 95.48).

    Args:
      image_bytes: scalar string tensor, one encoded image.
      resize_size: the resized shorter side.
      crop_size: side of the central crop.
      {resize_args}

    Returns:
      float32 `[crop_size, crop_size, 3]`.

    Raises:
      ValueError: if `crop_size > resize_size`.
    """
    image = _decode_for_crop(image_bytes, resize_size, crop_size)
    target = shorter_side_shape(tf.shape(image), resize_size)
    image = tf.image.resize(image, target, method="bilinear", antialias=antialias)
    y0 = torchvision_center_offset(target[0], crop_size)
    x0 = torchvision_center_offset(target[1], crop_size)
    image = image[y0:y0 + crop_size, x0:x0 + crop_size, :]
    image.set_shape([crop_size, crop_size, 3])
    return _finish(image, normalize, mean, std)


def _decode_for_crop(image_bytes, resize_size, crop_size):
    """The decoded RGB image, after checking that the crop fits the resize."""
    if crop_size > resize_size:
        raise ValueError(
            f"crop_size ({crop_size}) must not exceed resize_size ({resize_size})."
        )
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@_shared_args
def squash_center_crop(
    image_bytes: tf.Tensor,
    resize_size: int = RELEASED_RESIZE_SIZE,
    crop_size: int = RELEASED_CROP_SIZE,
    *,
    antialias: bool = True,
    normalize: bool = True,
    mean: Sequence[float] = normalization.IMAGENET_MEAN,
    std: Sequence[float] = normalization.IMAGENET_STD,
) -> tf.Tensor:
    """Squash to a square, then centre crop: the released weights' `squash` protocol.

    The whole image is resized to `resize_size x resize_size` ignoring its
    aspect ratio, then the central `crop_size x crop_size` is kept: how the
    published top-1 81.00 / top-5 95.62 was measured (378 -> 331,
    pretrainedmodels' `imagenet_eval.py --do-not-preserve-aspect-ratio`).

    Args:
      image_bytes: scalar string tensor, one encoded image.
      resize_size: side of the squashed image.
      crop_size: side of the central crop.
      {resize_args}

    Returns:
      float32 `[crop_size, crop_size, 3]`.

    Raises:
      ValueError: if `crop_size > resize_size`.
    """
    image = _decode_for_crop(image_bytes, resize_size, crop_size)
    image = tf.image.resize(image, [resize_size, resize_size], method="bilinear",
                            antialias=antialias)
    offset = (resize_size - crop_size + 1) // 2
    image = image[offset:offset + crop_size, offset:offset + crop_size, :]
    return _finish(image, normalize, mean, std)
