"""Pixel normalisation of the released PolyNet weights.

The weights ported from the CUHK Caffe release (`pretrainedmodels` and
`pytorchcv` ports) take RGB images scaled to [0, 1] and then standardised per
channel with the ImageNet mean and standard deviation below (docs/design.md section 1).
`polynet_tf.preprocess_input` must give the same numbers as `normalize_image`.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

# Per-channel RGB statistics of ImageNet on the [0, 1] scale, as used by the
# released weights (and by torchvision's ImageNet models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(
    image,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tf.Tensor:
    """Scales RGB pixels to [0, 1] and standardises them per channel.

    Computes `(image / 255 - mean) / std` in float32, in that order, so the
    result matches a reference that does the same steps.

    Args:
      image: RGB image(s), channels last (`[..., 3]`), either `uint8` or a
        float tensor with values in [0, 255] (what `tf.image.resize` returns
        for decoded images; the same convention as `preprocess_input`).
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel standard deviation on the [0, 1] scale.

    Returns:
      A float32 tensor of the same shape as `image`.

    Raises:
      ValueError: if `mean` or `std` do not have 3 entries, or `std` has a
        non-positive entry.
    """
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(
            f"mean and std must have 3 entries (R, G, B); received mean={mean!r}, "
            f"std={std!r}."
        )
    if min(std) <= 0:
        raise ValueError(f"every std entry must be positive; received std={std!r}.")
    image = tf.cast(tf.convert_to_tensor(image), tf.float32) / 255.0
    mean_map, std_map = _channel_maps(image, mean, std)
    return (image - mean_map) / std_map


def _channel_maps(image: tf.Tensor, mean, std):
    """Per-pixel copies of `mean` and `std` shaped like the image.

    Subtracting a 3-vector broadcast over the channel axis is several times
    slower on CPU than an element-wise operation on equal shapes (about 1 ms
    per 299x299 image), and the arithmetic is the same either way. With a
    static `[height, width, 3]` the maps are constants (broadcast over any
    batch axis); otherwise they are built for each call.
    """
    if image.shape.rank is not None and image.shape.rank >= 3 and (
            image.shape[-3:].is_fully_defined()):
        shape = image.shape[-3:].as_list()
        return (tf.constant(np.broadcast_to(np.float32(mean), shape)),
                tf.constant(np.broadcast_to(np.float32(std), shape)))
    mean_tensor = tf.constant(mean, dtype=tf.float32)
    std_tensor = tf.constant(std, dtype=tf.float32)
    return (tf.broadcast_to(mean_tensor, tf.shape(image)),
            tf.broadcast_to(std_tensor, tf.shape(image)))
