"""Published PolyNet weights: PyTorch checkpoint conversion and `weights="imagenet"`.

Depends on `polynet_tf.layers`, keras, numpy and h5py; torch (optional extra
`convert`) is imported only inside the functions that read checkpoints.
"""

from polynet_tf.weights.checkpoint import CheckpointError, read_checkpoint
from polynet_tf.weights.convert import convert_checkpoint
from polynet_tf.weights.layouts import LAYOUTS
from polynet_tf.weights.mapping import CheckpointMismatchError, assign_state_dict

__all__ = [
    "LAYOUTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "assign_state_dict",
    "convert_checkpoint",
    "read_checkpoint",
]
