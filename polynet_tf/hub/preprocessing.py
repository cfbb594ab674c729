"""Image converter and classifier preprocessor with the published weights' protocol.

The published weights' `PretrainedConfig` names their evaluation protocol
(`polynet_tf.data.protocols`); for the released Very Deep PolyNet: the shorter
side resized to 378, the central 331x331 crop, then scaled to [0, 1] and
standardised with the ImageNet mean and standard deviation.
`PolyNetImageConverter` does as `polynet_tf.data.preprocessing.preprocess_for_eval`:
it keeps the central window of `crop_fraction` of the shorter side (331 / 378
for the released protocol) and resizes it to `image_size` (bilinear,
antialiased, as PIL shrinks), which is the shorter-side resize and central
crop in one step. `PolyNetImageConverter.from_protocol` makes the converter of
any single-crop `CropProtocol` whose crop keeps the aspect ratio.
"""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from polynet_tf.data import protocols
from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.models.architectures import get_pretrained_config


def protocol_crop_fraction(protocol):
    """The central fraction of the shorter side that a single-crop protocol keeps.

    Args:
        protocol: a `CropProtocol` with one crop that keeps the aspect
            ratio ("single", or a shorter-side resize then a centre crop).

    Returns:
        `crop_fraction` for resize "none", else crop_size / resized shorter side.

    Raises:
        ValueError: several crops, or a squashing protocol (no central window
            of the original image is the same crop).
    """
    if protocol.num_crops != 1 or protocol.resize == "squash":
        raise ValueError(
            f"PolyNetImageConverter cuts one central crop that keeps the aspect ratio; "
            f"protocol {protocol.name!r} (resize={protocol.resize!r}, "
            f"{protocol.num_crops} crops) is not one.")
    if protocol.resize == "none":
        return protocol.crop_fraction
    return protocol.crop_size / protocol.scales[0]


def _scale_and_offset(mean, std):
    """(x / 255 - mean) / std written as x * scale + offset, keras-hub's form."""
    return (tuple(1.0 / (255.0 * s) for s in std),
            tuple(-m / s for m, s in zip(mean, std)))


# What the published weights expect: their preset's PretrainedConfig.
_PUBLISHED = get_pretrained_config(None, "imagenet")[1]
_PUBLISHED_PROTOCOL = protocols.get_protocol(
    _PUBLISHED.crop_protocol, crop_size=_PUBLISHED.input_size,
    scales=(_PUBLISHED.resize_size,) if _PUBLISHED.resize_size else None)
RELEASED_IMAGE_SIZE = (_PUBLISHED.input_size, _PUBLISHED.input_size)
RELEASED_CROP_FRACTION = protocol_crop_fraction(_PUBLISHED_PROTOCOL)
RELEASED_SCALE, RELEASED_OFFSET = _scale_and_offset(_PUBLISHED.mean, _PUBLISHED.std)


def _crop_window(height, width, target, fraction, is_tensor):
    """(top, left, crop height, crop width) of the central crop.

    The largest centred window with the target's aspect ratio, scaled by
    `fraction` and truncated to whole pixels (for a square target: the
    central square of `fraction` times the shorter side, as
    `polynet_tf.data.preprocessing.center_crop_window`).
    """
    ratio = target[1] / target[0]  # width / height
    if is_tensor:
        height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        crop_h = tf.maximum(tf.cast(tf.minimum(height_f, width_f / ratio) * fraction, tf.int32), 1)
        crop_w = tf.maximum(tf.cast(tf.minimum(width_f, height_f * ratio) * fraction, tf.int32), 1)
    else:
        crop_h = max(int(min(height, width / ratio) * fraction), 1)
        crop_w = max(int(min(width, height * ratio) * fraction), 1)
    return (height - crop_h + 1) // 2, (width - crop_w + 1) // 2, crop_h, crop_w


@keras.saving.register_keras_serializable(package="polynet_tf")
class PolyNetImageConverter(keras_hub.layers.ImageConverter):
    """Raw RGB images in [0, 255] -> PolyNet inputs (central crop, resize, normalise).

    Args:
        image_size: output (height, width); None keeps the input size (and
            skips the crop). Default: 331x331, the released network's.
        scale: per-channel factor; default `1 / (255 * std)` of the released
            weights.
        offset: per-channel offset after `scale`; default `-mean / std`.
        crop_fraction: side of the central crop relative to the largest
            centred window of the output's aspect ratio (0.875 = 331 / 378,
            the released evaluation); 1.0 keeps the whole window.
        interpolation: resize method ("bilinear").
        antialias: antialiased resize when shrinking (True, as PIL does).
        **kwargs: `keras_hub.layers.ImageConverter` arguments
            (`crop_to_aspect_ratio`, `pad_to_aspect_ratio`, `data_format`, ...).

    Raises:
        ValueError: `crop_fraction` outside (0, 1], or a crop requested
            together with bounding boxes.
    """

    backbone_cls = PolyNetBackbone

    def __init__(
        self,
        image_size=RELEASED_IMAGE_SIZE,
        scale=RELEASED_SCALE,
        offset=RELEASED_OFFSET,
        crop_fraction=RELEASED_CROP_FRACTION,
        interpolation="bilinear",
        antialias=True,
        **kwargs,
    ):
        if not isinstance(crop_fraction, (int, float)) or not 0.0 < crop_fraction <= 1.0:
            raise ValueError(
                f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction!r}"
            )
        # Tuples from the defaults, lists from a JSON config: keep one form.
        scale = list(scale) if isinstance(scale, (tuple, list)) else scale
        offset = list(offset) if isinstance(offset, (tuple, list)) else offset
        super().__init__(image_size=image_size, scale=scale, offset=offset,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.crop_fraction = float(crop_fraction)

    @classmethod
    def from_protocol(cls, protocol, mean, std, crop_fraction=None, **kwargs):
        """The converter that cuts a single-crop protocol's crop and normalises.

        Args:
            protocol: a `CropProtocol` (`protocol_crop_fraction` says which).
            mean: per-channel RGB mean on the [0, 1] scale.
            std: per-channel RGB standard deviation on the [0, 1] scale.
            crop_fraction: instead of the protocol's.
            **kwargs: other constructor arguments.

        Returns:
            A `PolyNetImageConverter` with the protocol's crop side, crop
            fraction and antialiasing.

        Raises:
            ValueError: a protocol this converter cannot cut.
        """
        scale, offset = _scale_and_offset(mean, std)
        return cls(image_size=(protocol.crop_size, protocol.crop_size), scale=scale,
                   offset=offset,
                   crop_fraction=crop_fraction or protocol_crop_fraction(protocol),
                   antialias=protocol.antialias, **kwargs)

    def _call_python(self, inputs):
        # Called on every path (the TensorFlow one wraps it): crop, then let
        # the base class resize, scale and offset. The crop is ours also at
        # crop_fraction=1 (Keras centres its aspect-ratio crop half a pixel
        # off the package's evaluation crop); Keras's then has nothing to cut.
        crop = self.image_size is not None and (
            self.crop_fraction < 1.0 or self.crop_to_aspect_ratio)
        if isinstance(inputs, dict):
            if self.crop_fraction < 1.0:
                raise ValueError(
                    "PolyNetImageConverter cannot crop images with bounding boxes; "
                    "build it with crop_fraction=1.0 for detection data."
                )
            return super()._call_python(inputs)
        if isinstance(inputs, (list, tuple)):
            try:
                inputs = np.asarray(inputs)
            except ValueError:  # Images of different sizes: one at a time.
                return type(inputs)(self._call_python(x) for x in inputs)
        images = self._as_float(inputs)
        if crop:
            images = self._center_crop(images)
        return super()._call_python(images)

    @staticmethod
    def _as_float(images):
        """float32 images: Keras resizes integer images in eager mode to integers
        (rounded), but not inside `tf.data`; in float32 both paths agree, and
        agree with `tf.image.resize` on decoded images."""
        if tf.is_tensor(images):
            return images if images.dtype == tf.float32 else tf.cast(images, tf.float32)
        return keras.ops.cast(keras.ops.convert_to_tensor(images), "float32")

    def _center_crop(self, images):
        is_tensor = tf.is_tensor(images)
        axis = -2 if self.data_format == "channels_first" else -3
        shape = tf.shape(images) if is_tensor else tuple(images.shape)
        top, left, crop_h, crop_w = _crop_window(
            shape[axis], shape[axis + 1], self.image_size, self.crop_fraction, is_tensor)
        if axis == -2:
            return images[..., top:top + crop_h, left:left + crop_w]
        return images[..., top:top + crop_h, left:left + crop_w, :]

    def get_config(self):
        config = super().get_config()
        config.update(crop_fraction=self.crop_fraction)
        return config


@keras.saving.register_keras_serializable(package="polynet_tf")
class PolyNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """keras-hub classifier preprocessor: `PolyNetImageConverter` on `x`, labels unchanged.

    Args:
        image_converter: a `PolyNetImageConverter` (None: no preprocessing).
        **kwargs: `keras_hub.models.ImageClassifierPreprocessor` arguments.
    """

    backbone_cls = PolyNetBackbone
    image_converter_cls = PolyNetImageConverter
