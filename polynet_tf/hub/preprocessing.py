"""Image converter and classifier preprocessor: the model's `InputContract` in keras-hub.

`PolyNetImageConverter` cuts and normalises an image as the model's
`polynet_tf.data.InputContract` says, with the evaluator's own crop ops
(`polynet_tf.evaluation.crops.make_crops`) and `normalize_image`: the same
tensor as the evaluator and the serving signatures, to the bit, on the
TensorFlow backend. Its default is the published weights' contract (for the
released Very Deep PolyNet: the whole image squashed to 378x378, aspect ratio
ignored, the central 331x331, scaled to [0, 1] and standardised with the
ImageNet mean and standard deviation). `PolyNetImageConverter.from_contract`
makes the converter of any contract.

Built with `crop_fraction` (and no contract), the converter keeps the central
window of `crop_fraction` of the shorter side and lets keras-hub resize,
scale and offset it (presets written before contracts existed load this way).
"""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from polynet_tf.data.input_contract import InputContract
from polynet_tf.evaluation.crops import make_crops
from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.models.architectures import get_pretrained_config


def _scale_and_offset(mean, std):
    """(x / 255 - mean) / std written as x * scale + offset, keras-hub's form."""
    return (tuple(1.0 / (255.0 * s) for s in std),
            tuple(-m / s for m, s in zip(mean, std)))


# What the published weights expect: their preset's input contract.
PUBLISHED_CONTRACT = get_pretrained_config(None, "imagenet")[1].input_contract


def _contract(value):
    if value is None or isinstance(value, InputContract):
        return value
    return InputContract.from_dict(value)


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
    """Raw RGB images in [0, 255] -> PolyNet inputs, as an `InputContract` says.

    Args:
        image_size: output (height, width); with a contract, its size (or
            None). None without a contract keeps the input size.
        scale: per-channel factor: `1 / (255 * std)` of the contract (or of
            the published weights' when both `scale` and `offset` are None).
        offset: per-channel offset after `scale`: `-mean / std`.
        crop_fraction: without a contract: side of the central crop relative
            to the largest centred window of the output's aspect ratio; 1.0
            keeps the whole window.
        interpolation: resize method ("bilinear").
        antialias: antialiased resize when shrinking (True, as PIL does).
        input_contract: an `InputContract` (or its `to_dict()`): crop and
            normalise exactly as it says. When no argument above is given:
            the published weights' contract.
        **kwargs: `keras_hub.layers.ImageConverter` arguments
            (`crop_to_aspect_ratio`, `pad_to_aspect_ratio`, `data_format`, ...).

    Raises:
        ValueError: `crop_fraction` outside (0, 1] or given with a contract,
            sizes or normalisation that contradict the contract, or a crop
            requested together with bounding boxes.
    """

    backbone_cls = PolyNetBackbone

    def __init__(
        self,
        image_size=None,
        scale=None,
        offset=None,
        crop_fraction=None,
        interpolation="bilinear",
        antialias=True,
        input_contract=None,
        **kwargs,
    ):
        contract = _contract(input_contract)
        if contract is None and image_size is scale is offset is crop_fraction is None:
            contract = PUBLISHED_CONTRACT
        if contract is not None:
            image_size, scale, offset, antialias = self._contract_arguments(
                contract, image_size, scale, offset, crop_fraction, antialias)
        else:
            crop_fraction = 1.0 if crop_fraction is None else crop_fraction
            if scale is None and offset is None:  # The published weights' normalisation.
                scale, offset = _scale_and_offset(PUBLISHED_CONTRACT.mean, PUBLISHED_CONTRACT.std)
        if contract is None and (not isinstance(crop_fraction, (int, float))
                                 or not 0.0 < crop_fraction <= 1.0):
            raise ValueError(
                f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction!r}"
            )
        # Tuples from the defaults, lists from a JSON config: keep one form.
        scale = list(scale) if isinstance(scale, (tuple, list)) else scale
        offset = list(offset) if isinstance(offset, (tuple, list)) else offset
        super().__init__(image_size=image_size, scale=scale, offset=offset,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.input_contract = contract
        self.crop_fraction = None if contract is not None else float(crop_fraction)

    @staticmethod
    def _contract_arguments(contract, image_size, scale, offset, crop_fraction, antialias):
        """(image_size, scale, offset, antialias) of a contract, checking given ones agree."""
        size = (contract.image_size, contract.image_size)
        own_scale, own_offset = _scale_and_offset(contract.mean, contract.std)
        given = dict(image_size=image_size, scale=scale, offset=offset)
        own = dict(image_size=size, scale=own_scale, offset=own_offset)
        for name, value in given.items():
            if value is not None and not np.allclose(value, own[name], rtol=1e-6, atol=1e-7):
                raise ValueError(f"`{name}`={value!r} contradicts the input contract "
                                 f"({contract.describe()}: {own[name]!r}); give one or the "
                                 "other.")
        if crop_fraction is not None:
            raise ValueError("`crop_fraction` is part of the input contract (InputContract("
                             "protocol='single', crop_fraction=...)); do not give both.")
        return size, own_scale, own_offset, contract.antialias

    @classmethod
    def from_contract(cls, contract, **kwargs):
        """The converter of an `InputContract` (`polynet_tf.loading.load_model`'s)."""
        return cls(input_contract=contract, **kwargs)

    @classmethod
    def from_protocol(cls, protocol, mean, std, crop_fraction=None, **kwargs):
        """The converter of a single-crop `CropProtocol` and a normalisation.

        Args:
            protocol: a one-crop `CropProtocol` ("single", "squash",
                "shorter_side", "pytorchcv", any sizes).
            mean: per-channel RGB mean on the [0, 1] scale.
            std: per-channel RGB standard deviation on the [0, 1] scale.
            crop_fraction: "single" only: instead of the protocol's.
            **kwargs: other constructor arguments.

        Raises:
            ValueError: a protocol with several crops, or `crop_fraction` for
                a resizing protocol.
        """
        single = protocol.name == "single"
        if crop_fraction is not None and not single:
            raise ValueError(f"crop_fraction applies to protocol 'single' only; protocol "
                             f"{protocol.name!r} resizes to {protocol.scales}.")
        contract = InputContract(
            protocol=protocol.name, image_size=protocol.crop_size,
            resize_size=None if single else protocol.scales[0],
            crop_fraction=(crop_fraction or protocol.crop_fraction) if single else None,
            antialias=protocol.antialias, mean=tuple(mean), std=tuple(std))
        if contract.crop_protocol() != protocol:
            raise ValueError(f"PolyNetImageConverter cuts one crop; protocol {protocol.name!r} "
                             f"({protocol.num_crops} crops, {protocol.to_dict()}) is not one.")
        return cls.from_contract(contract, **kwargs)

    def _call_python(self, inputs):
        if isinstance(inputs, dict):
            if self.input_contract is not None or self.crop_fraction < 1.0:
                raise ValueError(
                    "PolyNetImageConverter cannot crop images with bounding boxes; "
                    "build it with crop_fraction=1.0 (and no input contract) for detection "
                    "data."
                )
            return super()._call_python(inputs)
        if isinstance(inputs, (list, tuple)):
            try:
                inputs = np.asarray(inputs)
            except ValueError:  # Images of different sizes: one at a time.
                return type(inputs)(self._call_python(x) for x in inputs)
        if self.input_contract is not None:
            return self._apply_contract(inputs)
        # Called on every path (the TensorFlow one wraps it): crop, then let
        # the base class resize, scale and offset. The crop is ours also at
        # crop_fraction=1 (Keras centres its aspect-ratio crop half a pixel
        # off the package's evaluation crop); Keras's then has nothing to cut.
        images = self._as_float(inputs)
        if self.image_size is not None and (self.crop_fraction < 1.0
                                            or self.crop_to_aspect_ratio):
            images = self._center_crop(images)
        return super()._call_python(images)

    def _apply_contract(self, images):
        """The evaluator's crop of the contract, then its normalisation (TensorFlow ops)."""
        images = tf.convert_to_tensor(images)
        if self.data_format == "channels_first":
            images = tf.experimental.numpy.moveaxis(images, -3, -1)
        protocol = self.input_contract.crop_protocol()
        size = self.input_contract.image_size
        if images.shape.rank == 3:
            crops = make_crops(images, protocol)[0]
        else:
            crops = tf.map_fn(lambda image: make_crops(image, protocol)[0], images,
                              fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        crops = self.input_contract.normalize(crops)
        if self.data_format == "channels_first":
            crops = tf.experimental.numpy.moveaxis(crops, -1, -3)
        return crops

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
        config.update(crop_fraction=self.crop_fraction, input_contract=(
            None if self.input_contract is None else self.input_contract.to_dict()))
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
