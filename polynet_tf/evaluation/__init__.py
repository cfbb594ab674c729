"""Evaluation of PolyNets: crop protocols (single, GoogLeNet 144, PolyNet multi-crop).

- `CropProtocol`, `get_protocol`, `make_crops`, `pool_scores` (`protocols`):
  the crop sets as data, the crops as a TensorFlow graph, top-k pooling.
"""

from polynet_tf.evaluation.protocols import (
    PROTOCOL_NAMES,
    CropLayout,
    CropProtocol,
    get_protocol,
    make_crops,
    make_scale_crops,
    pool_scores,
)

__all__ = [
    "PROTOCOL_NAMES",
    "CropLayout",
    "CropProtocol",
    "get_protocol",
    "make_crops",
    "make_scale_crops",
    "pool_scores",
]
