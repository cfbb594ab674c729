"""polynet-tf: PolyNet for TensorFlow 2 / Keras 3.

Zhang, Li, Loy, Lin, "PolyNet: A Pursuit of Structural Diversity in Very Deep
Networks", CVPR 2017.

The model API mirrors `keras.applications`::

    from polynet_tf import PolyNet, preprocess_input, decode_predictions
    model = PolyNet(architecture="very_deep", weights=None)

Public names are imported lazily so that `polynet_tf.data` (which knows nothing
of models) can be used without building Keras layers.
"""

import importlib

from polynet_tf.version import __version__

_LAZY_ATTRIBUTES = {
    "PolyNet": "polynet_tf.models.polynet",
    "preprocess_input": "polynet_tf.models.imagenet_utils",
    "decode_predictions": "polynet_tf.models.imagenet_utils",
    "list_architectures": "polynet_tf.models.architectures",
    "get_architecture": "polynet_tf.models.architectures",
    "set_path_drop_rates": "polynet_tf.models.polynet",
    "fold_batch_norms": "polynet_tf.models.folding",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name):
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'polynet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
