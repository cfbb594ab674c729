"""The serving signatures of an exported PolyNet, as a Keras `ExportArchive`.

| signature | input (name: dtype, shape) |
| --- | --- |
| `serving_default` | `images`: string `[batch]`, encoded JPEG/PNG/GIF/BMP of any size |
| `serve_images` | `images`: float32 `[batch, height, width, 3]`, RGB in [0, 255], any size (*) |
| `serve_images_uint8` | `images`: uint8 `[batch, height, width, 3]`, any size (*) |
| `serve_crops` | `crops`: float32 `[batch, crop, crop, 3]` in [0, 255], already cropped |
| `serve_examples` | `examples`: string `[batch]`, `tf.train.Example`s with `image/encoded` |
| `serving_multicrop` | `images`: as `serving_default`; only with a multi-crop protocol |

Every signature returns `classes` (int32 `[batch, top_k]`, best first),
`labels` (string `[batch, top_k]`), `scores` (float32 `[batch, top_k]`,
probabilities of `classes`) and `probabilities` (float32 `[batch, classes]`).
A SavedModel signature has one dtype per input, hence two image signatures.
(*) Left out with `variable_size_signatures=False` (`--novariable_size_signatures`),
for TF Serving with batching: the other signatures batch along dimension 0 only.
"""

import dataclasses
from typing import Optional, Sequence

import keras
import tensorflow as tf

from polynet_tf.data.example_format import KEY_ENCODED
from polynet_tf.data.input_contract import InputContract
from polynet_tf.evaluation import protocols
from polynet_tf.serving import preprocessing as serving_preprocessing

DEFAULT_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serve_images"
IMAGES_UINT8_SIGNATURE = "serve_images_uint8"
EXAMPLES_SIGNATURE = "serve_examples"
CROPS_SIGNATURE = "serve_crops"
MULTICROP_SIGNATURE = "serving_multicrop"
OUTPUT_NAMES = ("classes", "labels", "scores", "probabilities")
# Inputs of any height and width: not batchable by TF Serving without padding.
VARIABLE_SIZE_SIGNATURES = (IMAGES_SIGNATURE, IMAGES_UINT8_SIGNATURE)


@dataclasses.dataclass
class SignatureOptions:
    """What the signatures compute beyond the model.

    Attributes:
      contract: the model's `InputContract` (crop and normalisation of the
        single-crop signatures).
      class_names: one name per class, in class-index order.
      top_k: how many classes `classes`, `labels` and `scores` hold.
      model_outputs: "probabilities" (softmax top) or "logits".
      multicrop: the evaluator's multi-crop `CropProtocol` (None: no
        `serving_multicrop` signature).
      variable_size_signatures: add `serve_images` and `serve_images_uint8`,
        whose pixel tensors have any height and width. TF Serving's batching
        concatenates requests along the batch dimension and needs every other
        dimension equal (zero padding would change the resized crop), so a
        deployment with `--enable_batching` exports without them
        (`BATCHABLE_SIGNATURES` remain: strings or fixed-size crops).
    """

    contract: InputContract
    class_names: Sequence[str]
    top_k: int = 5
    model_outputs: str = "probabilities"
    multicrop: Optional[object] = None
    variable_size_signatures: bool = True


def validate_options(model, options: SignatureOptions):
    """Checks `options` against the model.

    Raises:
      ValueError: naming the option that does not fit.
    """
    num_classes = int(model.output_shape[-1])
    if len(options.class_names) != num_classes:
        raise ValueError(
            f"{len(options.class_names)} class names were given but the model has "
            f"{num_classes} classes; pass a class names file with one name per class.")
    if not 1 <= int(options.top_k) <= num_classes:
        raise ValueError(f"top_k must be in [1, {num_classes}] (the number of classes); "
                         f"received top_k={options.top_k!r}.")
    if options.model_outputs not in ("probabilities", "logits"):
        raise ValueError("model_outputs must be 'probabilities' or 'logits'; received "
                         f"{options.model_outputs!r}.")
    input_size = tuple(model.input_shape[1:3])
    crop = int(options.contract.image_size)
    if input_size != (None, None) and input_size != (crop, crop):
        raise ValueError(
            f"the input contract crops {crop}x{crop} but the model takes {input_size}; "
            "export with an image size equal to the model's input size.")
    if options.multicrop is not None and input_size not in (
            (None, None), (options.multicrop.crop_size,) * 2):
        raise ValueError(
            f"the multi-crop protocol crops {options.multicrop.crop_size} pixels but the "
            f"model takes {input_size}; override its crop_size.")


class _SignatureBuilder:
    """Holds the model and options; its methods are the endpoint functions."""

    def __init__(self, model, options: SignatureOptions):
        self.model = model
        self.options = options
        self.contract = options.contract
        self.protocol = options.contract.crop_protocol()
        self.class_names = tf.constant(list(options.class_names), dtype=tf.string)
        # Every endpoint calls the network through this one function: it is
        # traced once and the SavedModel holds one copy of its graph, not one
        # per signature and multi-crop scale.
        self.crop_size = int(options.contract.image_size)
        self._network = tf.function(
            lambda crops: model(crops, training=False),
            input_signature=[tf.TensorSpec([None, self.crop_size, self.crop_size, 3],
                                           tf.float32)])

    def _probabilities(self, images):
        outputs = self._network(images)
        outputs = tf.cast(outputs, tf.float32)
        if self.options.model_outputs == "logits":
            outputs = tf.nn.softmax(outputs, axis=-1)
        return outputs

    def _outputs(self, probabilities):
        scores, classes = tf.math.top_k(probabilities, k=int(self.options.top_k))
        return {
            "classes": classes,
            "labels": tf.gather(self.class_names, classes),
            "scores": scores,
            "probabilities": probabilities,
        }

    def _crop_batch(self, images):
        size = self.crop_size
        crops = tf.map_fn(
            lambda image: serving_preprocessing.single_crop(image, self.protocol),
            images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return self.contract.normalize(crops)

    def _decode_batch(self, image_bytes, signature_name):
        with tf.control_dependencies([serving_preprocessing.check_encoded_batch(
                image_bytes, signature_name)]):
            image_bytes = tf.identity(image_bytes)
        positions = tf.range(tf.shape(image_bytes)[0])
        size = self.crop_size

        def one(args):
            data, position = args
            image = serving_preprocessing.decode_checked(data, position, signature_name)
            return serving_preprocessing.single_crop(image, self.protocol)

        crops = tf.map_fn(one, (image_bytes, positions),
                          fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return self.contract.normalize(crops)

    def serve_encoded(self, images):
        crops = self._decode_batch(images, DEFAULT_SIGNATURE)
        return self._outputs(self._probabilities(crops))

    def serve_images(self, images):
        return self._outputs(self._probabilities(self._crop_batch(images)))

    def serve_images_uint8(self, images):
        return self.serve_images(tf.cast(images, tf.float32))

    def serve_crops(self, crops):
        crops = self.contract.normalize(crops)
        return self._outputs(self._probabilities(crops))

    def serve_examples(self, examples):
        features = tf.io.parse_example(
            examples, {KEY_ENCODED: tf.io.FixedLenFeature([], tf.string)})
        crops = self._decode_batch(features[KEY_ENCODED], EXAMPLES_SIGNATURE)
        return self._outputs(self._probabilities(crops))

    def serve_multicrop(self, images):
        protocol = self.options.multicrop
        num_classes = int(self.class_names.shape[0])
        with tf.control_dependencies([serving_preprocessing.check_encoded_batch(
                images, MULTICROP_SIGNATURE)]):
            images = tf.identity(images)
        positions = tf.range(tf.shape(images)[0])

        def one(args):
            data, position = args
            image = serving_preprocessing.decode_checked(data, position, MULTICROP_SIGNATURE)
            scores = []
            for scale_index in range(protocol.num_scales):
                # One scale at a time (docs/design.md section 4: 288 crops of 331 pixels
                # are 378 MB per image): the next scale's crops are cut only
                # after this scale's scores exist.
                with tf.control_dependencies(scores[-1:]):
                    crops = protocols.make_scale_crops(image, protocol, scale_index)
                crops = self.contract.normalize(crops)
                scores.append(self._probabilities(crops))
            return tf.concat(scores, axis=0)

        # One image at a time: each scale's crops already fill a batch.
        scores = tf.map_fn(one, (images, positions), parallel_iterations=1,
                           fn_output_signature=tf.TensorSpec([None, num_classes], tf.float32))
        return self._outputs(protocols.pool_scores(scores, protocol))


def build_export_archive(model, options: SignatureOptions) -> keras.export.ExportArchive:
    """An `ExportArchive` with every serving signature of `model`.

    Args:
      model: a Keras PolyNet with the top (probabilities or logits).
      options: `SignatureOptions`.

    Returns:
      The archive; `write_out(path)` writes the SavedModel.

    Raises:
      ValueError: if the options do not fit the model.
    """
    validate_options(model, options)
    builder = _SignatureBuilder(model, options)
    archive = keras.export.ExportArchive()
    archive.track(model)
    strings = [tf.TensorSpec([None], tf.string, name="images")]
    archive.add_endpoint(DEFAULT_SIGNATURE, builder.serve_encoded, input_signature=strings)
    if options.variable_size_signatures:
        archive.add_endpoint(IMAGES_SIGNATURE, builder.serve_images, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        archive.add_endpoint(IMAGES_UINT8_SIGNATURE, builder.serve_images_uint8,
                             input_signature=[
                                 tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    size = int(options.contract.image_size)
    archive.add_endpoint(CROPS_SIGNATURE, builder.serve_crops, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name="crops")])
    archive.add_endpoint(EXAMPLES_SIGNATURE, builder.serve_examples, input_signature=[
        tf.TensorSpec([None], tf.string, name="examples")])
    if options.multicrop is not None:
        archive.add_endpoint(MULTICROP_SIGNATURE, builder.serve_multicrop,
                             input_signature=strings)
    return archive


def signature_names(multicrop: bool, variable_size_signatures: bool = True):
    """The signatures `build_export_archive` writes."""
    names = [DEFAULT_SIGNATURE, IMAGES_SIGNATURE, IMAGES_UINT8_SIGNATURE, CROPS_SIGNATURE,
             EXAMPLES_SIGNATURE]
    if not variable_size_signatures:
        names = [name for name in names if name not in VARIABLE_SIZE_SIGNATURES]
    return names + [MULTICROP_SIGNATURE] if multicrop else names
