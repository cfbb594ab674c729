"""The crops of a `CropProtocol` as a TensorFlow graph (one decoded image in, crops out).

Re-exported by `polynet_tf.evaluation.protocols`; the boxes these ops cut are
the ones `CropProtocol.crop_boxes` lists (tested against each other).
"""

from typing import TYPE_CHECKING

import tensorflow as tf

from polynet_tf.data import preprocessing

if TYPE_CHECKING:  # Annotations only.
    from polynet_tf.data.protocols import CropProtocol


def make_crops(image, protocol: "CropProtocol") -> tf.Tensor:
    """All crops of one decoded image, in crop order.

    Graph-compatible: works eagerly, inside `tf.function` with an unknown image
    shape, inside `tf.data` and `tf.map_fn`.

    Args:
      image: one decoded RGB image, `[height, width, 3]`, uint8 or float in
        [0, 255].
      protocol: the `CropProtocol`.

    Returns:
      float32 `[num_crops, crop_size, crop_size, 3]`, RGB in [0, 255], not
      normalised.
    """
    crops = [make_scale_crops(image, protocol, i) for i in range(protocol.num_scales)]
    return crops[0] if len(crops) == 1 else tf.concat(crops, axis=0)


def make_scale_crops(image, protocol: "CropProtocol", scale_index: int) -> tf.Tensor:
    """The crops of one scale: float32 `[crops_per_scale, crop_size, crop_size, 3]`."""
    image = tf.convert_to_tensor(image)
    image.shape.assert_has_rank(3)
    size = protocol.crop_size
    scaled = _resize_for_scale(image, protocol, scale_index)
    height, width = tf.shape(scaled)[0], tf.shape(scaled)[1]
    if protocol.layout == "center":
        if protocol.crop_fraction is None:
            side = tf.constant(size)
        else:
            side = preprocessing.center_crop_window(tf.shape(scaled), protocol.crop_fraction)[2]
        if protocol.rounding == "torchvision":
            y0 = preprocessing.torchvision_center_offset(height, side)
            x0 = preprocessing.torchvision_center_offset(width, side)
        else:
            y0 = (height - side + 1) // 2
            x0 = (width - side + 1) // 2
        box = scaled[y0:y0 + side, x0:x0 + side, :]
        if protocol.crop_fraction is not None:
            box = _resize(box, size, protocol.antialias)
        crops = tf.cast(box, tf.float32)[tf.newaxis]
    else:
        crops = _googlenet_crops(scaled, height, width, size, protocol.antialias)
    if protocol.mirror:
        # [n, 2, ...] then [2n, ...]: each crop followed by its mirror.
        crops = tf.reshape(tf.stack([crops, tf.reverse(crops, axis=[2])], axis=1),
                           [-1, size, size, 3])
    return tf.ensure_shape(crops, [protocol.crops_per_scale, size, size, 3])


def _googlenet_crops(scaled, height, width, size, antialias):
    square = tf.minimum(height, width)
    squares = tf.stack([
        scaled[y:y + square, x:x + square, :]
        for y, x in zip([0, (height - square + 1) // 2, height - square],
                        [0, (width - square + 1) // 2, width - square])
    ])
    squares = tf.cast(squares, tf.float32)
    far, mid = square - size, (square - size + 1) // 2
    windows = [squares[:, y:y + size, x:x + size, :]
               for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
    windows.append(_resize(squares, size, antialias))
    # [3 squares, 6 positions, size, size, 3] -> square-major crop order.
    return tf.reshape(tf.stack(windows, axis=1), [-1, size, size, 3])


def _resize(images, size, antialias):
    """Bilinear resize to `size` (an int for a square, or a `[height, width]` tensor)."""
    target = [size, size] if isinstance(size, int) else size
    return tf.image.resize(images, target, method="bilinear", antialias=antialias)


def _resize_for_scale(image, protocol, scale_index):
    if protocol.resize == "none":
        return image
    scale = protocol.scales[scale_index]
    if protocol.resize == "squash":
        target = tf.constant([scale, scale])
    else:
        # The shorter side is exactly the scale (no rounding); square images too.
        target = preprocessing.shorter_side_shape(
            tf.shape(image), scale, truncate=protocol.rounding == "torchvision")
    return _resize(image, target, protocol.antialias)
