"""Image converter and classifier preprocessor with the released weights' protocol.

The released Very Deep PolyNet weights (the CUHK Caffe release as ported by
`pretrainedmodels` and `pytorchcv`) were evaluated on RGB images whose shorter
side is resized to 378 before the central 331x331 crop is kept, then scaled to
[0, 1] and standardised with the ImageNet mean (0.485, 0.456, 0.406) and
standard deviation (0.229, 0.224, 0.225). `PolyNetImageConverter` does the
same as `polynet_tf.data.preprocessing.preprocess_for_eval`: it keeps the
central window of `crop_fraction` (331 / 378 = 0.875) of the shorter side and
resizes it to `image_size` (bilinear, antialiased, as PIL shrinks), which is
the shorter-side resize and central crop in one step.
"""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from polynet_tf.data.preprocessing import DEFAULT_CROP_FRACTION
from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.models.architectures import get_pretrained_config

# What the published weights expect: their preset's PretrainedConfig.
_PUBLISHED = get_pretrained_config(None, "imagenet")[1]
RELEASED_IMAGE_SIZE = (_PUBLISHED.input_size, _PUBLISHED.input_size)
# About crop / resize of the released evaluation (the shorter side resized first).
RELEASED_CROP_FRACTION = DEFAULT_CROP_FRACTION
# (x / 255 - mean) / std written as x * scale + offset, keras-hub's form.
RELEASED_SCALE = tuple(1.0 / (255.0 * s) for s in _PUBLISHED.std)
RELEASED_OFFSET = tuple(-m / s for m, s in zip(_PUBLISHED.mean, _PUBLISHED.std))


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
