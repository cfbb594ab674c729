"""Keras layers of PolyNet (`keras.layers` / `keras.ops` only, every backend)."""

from polynet_tf.layers.batch_norm import BatchNormSettings
from polynet_tf.layers.blocks import (
    InceptionResidualBlock,
    ReductionA,
    ReductionB,
    Stem,
)
from polynet_tf.layers.branches import BranchConcat
from polynet_tf.layers.conv_bn import ConvBN
from polynet_tf.layers.module_spec import ModuleSpec, SpecSyntaxError, parse_module
from polynet_tf.layers.poly_inception import PolyInceptionModule

__all__ = [
    "BatchNormSettings",
    "BranchConcat",
    "ConvBN",
    "InceptionResidualBlock",
    "ModuleSpec",
    "PolyInceptionModule",
    "ReductionA",
    "ReductionB",
    "SpecSyntaxError",
    "Stem",
    "parse_module",
]
