"""Writes a PolyNet as a keras-hub preset directory, ready to upload.

Usage:

    pip install "polynet-tf[hub]"
    # The released Very Deep PolyNet (downloads and converts the published
    # checkpoint once, see polynet_tf.weights.pretrained):
    python -m polynet_tf.hub.make_preset --weights imagenet --output polynet_very_deep_imagenet
    # Any PolyNet weights file written by `model.save_weights` (path or URI):
    python -m polynet_tf.hub.make_preset --weights run/model.weights.h5 \\
        --architecture ir_3_6_3 --classes 10 --output gs://bucket/presets/ir_3_6_3_cifar

The directory holds keras-hub's files (config.json, model.weights.h5,
task.json, task.weights.h5, preprocessor.json, image_converter.json,
metadata.json) and appears complete or not at all. Load it with
`keras_hub.models.ImageClassifier.from_preset(DIR)` after `import
polynet_tf.hub`; upload it with `keras_hub.upload_preset(handle, DIR)`.
"""

from absl import flags

from polynet_tf import cli, fileio
from polynet_tf.data import protocols
from polynet_tf.data.input_contract import resolve_input_contract
from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.hub.classifier import PolyNetImageClassifier
from polynet_tf.hub.convert import copy_weights
from polynet_tf.hub.preprocessing import (
    PolyNetImageClassifierPreprocessor,
    PolyNetImageConverter,
)
from polynet_tf.hub.presets import save_preset
from polynet_tf.loading import load_model

FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("weights", None, "'imagenet' (the released network's weights) or a "
                    "`.weights.h5` file of a PolyNet() model with its top.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Preset directory to write (path or URI).",
                    flag_values=FLAGS)
flags.DEFINE_string("architecture", None, "Architecture preset name or stage spec (default "
                    "for 'imagenet': the preset that has them).", flag_values=FLAGS)
flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier the weights were trained with.",
                   flag_values=FLAGS)
flags.DEFINE_integer("classes", None, "Classes of the weights' top (default: the published "
                     "weights' for 'imagenet', else 1000).", flag_values=FLAGS)
flags.DEFINE_enum("activation", "softmax", ["softmax", "linear"], "Activation of the top: "
                  "softmax (probabilities, as PolyNet()) or linear (logits).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "The model's input size (default: the published "
                     "weights' or the architecture's).", flag_values=FLAGS)
flags.DEFINE_enum("protocol", None, list(protocols.SINGLE_CROP_PROTOCOLS)
                  + list(protocols.PROTOCOL_ALIASES),
                  "Single-crop protocol of the preprocessor (default: the published weights' "
                  "for 'imagenet', 'squash'; else 'single').", flag_values=FLAGS)
flags.DEFINE_float("crop_fraction", None, "Protocol 'single' only (models without published "
                   "weights): central crop of the shorter side before resizing (default "
                   "0.875).", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing preset at --output.",
                  flag_values=FLAGS)
flags.mark_flags_as_required(["weights", "output"], flag_values=FLAGS)


def make_preset(weights, output, architecture=None, width_multiplier=1.0,
                classes=None, activation="softmax", image_size=None, crop_fraction=None,
                overwrite=False, protocol=None):
    """Builds the classifier with its weights and preprocessing, and saves it as a preset.

    Args:
        weights: "imagenet" or the path/URI of a `.weights.h5` file of
            `PolyNet(architecture, classes=classes, width_multiplier=...)`.
        output: the preset directory (path or URI).
        architecture: preset name or spec; default for "imagenet": the
            preset that has them (needed for a weights file).
        width_multiplier: width of the weights.
        classes: classes of the top (None: the published weights' for
            "imagenet", else 1000).
        activation: "softmax" or "linear".
        image_size: output side of the preprocessing (None: the published
            weights' input size, else the architecture's).
        crop_fraction: central crop of the shorter side before resizing
            (None: that of the model's single-crop protocol, `load_model`'s).
        overwrite: replace an existing preset.
        protocol: the preprocessor's single-crop protocol (None: the model's
            input contract: the published weights' protocol, else "single").

    Returns:
        The saved `PolyNetImageClassifier`.

    Raises:
        FileExistsError: `output` exists and `overwrite` is False.
        ValueError: weights that do not fit the architecture (the first
            differing weight is named), bad arguments.
        OSError: the ImageNet weights cannot be obtained, or a damaged file.
    """
    if fileio.exists(output) and not overwrite:
        raise FileExistsError(f"{output!r} already exists; pass --overwrite to replace it.")
    if protocol is not None:
        # A protocol that does not exist or refuses crop_fraction does so whatever the
        # weights: refused before the network is built and loaded.
        resolve_input_contract(protocol=protocol, crop_fraction=crop_fraction)
    activation = None if activation == "linear" else activation
    loaded = load_model(weights=weights, architecture=architecture, classes=classes,
                        width_multiplier=width_multiplier, image_size=image_size,
                        classifier_activation=activation)
    model, classes = loaded.model, loaded.num_classes
    backbone = PolyNetBackbone(loaded.description["architecture"],
                               width_multiplier=width_multiplier)
    contract = resolve_input_contract(default=loaded.contract, protocol=protocol,
                                      crop_fraction=crop_fraction)
    converter = PolyNetImageConverter.from_contract(contract)
    classifier = PolyNetImageClassifier(
        backbone, num_classes=classes, activation=activation,
        preprocessor=PolyNetImageClassifierPreprocessor(converter),
    )
    copy_weights(model, classifier)
    save_preset(classifier, output)
    return classifier


def main(argv=None):
    """Command-line entry point; returns the exit status.

    0 written, 1 the weights cannot be made a preset (nothing written), 2 usage error.
    """
    return cli.run("python -m polynet_tf.hub.make_preset", __doc__, FLAGS, _run, argv,
                   usage_errors=())


def _run(values):
    try:
        classifier = make_preset(
            values.weights, values.output, values.architecture, values.width_multiplier,
            values.classes, values.activation, values.image_size, values.crop_fraction,
            values.overwrite, values.protocol)
    except (ValueError, OSError, ImportError) as error:
        return cli.fail("python -m polynet_tf.hub.make_preset", str(error), status=1)
    print(f"Wrote the keras-hub preset {values.output} ({classifier.count_params():,} "
          f"parameters). Load it with: import polynet_tf.hub; "
          f"keras_hub.models.ImageClassifier.from_preset({values.output!r})")
    return 0


if __name__ == "__main__":
    cli.app_run(main)
