"""PolyNet for keras-hub: backbone, image classifier, preprocessing and presets.

Needs the optional extra: `pip install "polynet-tf[hub]"` (keras-hub >= 0.32).
Importing this package registers the classes with Keras, so keras-hub's own
loaders (`keras_hub.models.ImageClassifier.from_preset(dir)`,
`keras_hub.models.Backbone.from_preset(dir)`) find them::

    import keras_hub
    import polynet_tf.hub

    classifier = keras_hub.models.ImageClassifier.from_preset("./polynet_very_deep_imagenet")

See docs/keras_hub.md.
"""

try:
    import keras_hub  # noqa: F401  (imported first: a clear message when it is missing)
except ImportError as error:
    raise ImportError(
        "polynet_tf.hub needs keras-hub, which is an optional extra of polynet-tf. Install it "
        'with:  pip install "polynet-tf[hub]"   (or: pip install "keras-hub>=0.32"). '
        f"The import failed with: {error}"
    ) from error

# pylint: disable=wrong-import-position
from polynet_tf.hub.backbone import PYRAMID_LEVELS, PolyNetBackbone
from polynet_tf.hub.classifier import PolyNetImageClassifier
from polynet_tf.hub.convert import copy_weights, from_polynet, to_polynet
from polynet_tf.hub.preprocessing import (
    PolyNetImageClassifierPreprocessor,
    PolyNetImageConverter,
)
from polynet_tf.hub.presets import PresetError, save_preset

__all__ = [
    "PYRAMID_LEVELS",
    "PolyNetBackbone",
    "PolyNetImageClassifier",
    "PolyNetImageClassifierPreprocessor",
    "PolyNetImageConverter",
    "PresetError",
    "copy_weights",
    "from_polynet",
    "save_preset",
    "to_polynet",
]
