"""PolyNet models: the architecture registry, the builder and ImageNet helpers."""

from polynet_tf.models.architectures import (
    ArchitecturePreset,
    get_architecture,
    list_architectures,
    resolve_architecture,
)
from polynet_tf.models.folding import fold_batch_norms
from polynet_tf.models.imagenet_utils import decode_predictions, preprocess_input
from polynet_tf.models.polynet import PolyNet, polyinception_modules, set_path_drop_rates
from polynet_tf.models.spec import ArchitectureSpec, StageSpec, parse_architecture

__all__ = [
    "ArchitecturePreset",
    "ArchitectureSpec",
    "PolyNet",
    "StageSpec",
    "decode_predictions",
    "fold_batch_norms",
    "get_architecture",
    "list_architectures",
    "parse_architecture",
    "polyinception_modules",
    "preprocess_input",
    "resolve_architecture",
    "set_path_drop_rates",
]
