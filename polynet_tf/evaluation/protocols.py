"""Crop protocols for evaluation (the data in `polynet_tf.data.protocols`) and their graph half.

`CropProtocol`, `get_protocol` and the protocol names live in
`polynet_tf.data.protocols`, below the evaluator, training's evaluation and
serving, which share them; this module re-exports them with the TensorFlow
half: `make_crops` / `make_scale_crops` (the crops) and `pool_scores`.
"""

# pylint: disable=unused-import
from polynet_tf.data.protocols import (  # noqa: F401
    GOOGLENET_POSITIONS,
    GOOGLENET_SCALES,
    LAYOUTS,
    POLYNET_MULTICROP_SCALES,
    POLYNET_TOPK_FRACTION,
    POOLINGS,
    PROTOCOL_NAMES,
    RELEASED_PROTOCOLS,
    RESIZE_MODES,
    ROUNDINGS,
    CropLayout,
    CropProtocol,
    get_protocol,
)
from polynet_tf.evaluation.crops import make_crops, make_scale_crops  # noqa: F401
from polynet_tf.evaluation.pooling import pool_scores  # noqa: F401
