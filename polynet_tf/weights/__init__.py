"""Published PolyNet weights: PyTorch checkpoint conversion and `weights="imagenet"`.

Depends on `polynet_tf.layers`, keras, tensorflow (`tf.io.gfile`), numpy and
h5py. PyTorch checkpoints are read without torch (`torch_format`: standard
library and NumPy, a restricted unpickler). Weights files are loaded strictly
(`load_weights_file`).
"""

from polynet_tf.weights.checkpoint import CheckpointError, read_checkpoint
from polynet_tf.weights.convert import convert_checkpoint
from polynet_tf.weights.layouts import LAYOUTS
from polynet_tf.weights.mapping import CheckpointMismatchError, assign_state_dict
from polynet_tf.weights.torch_format import UnsafeCheckpointError, load_state_dict
from polynet_tf.weights.weights_file import (
    CorruptWeightsFileError,
    WeightsMismatchError,
    load_weights_file,
)

__all__ = [
    "LAYOUTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "CorruptWeightsFileError",
    "UnsafeCheckpointError",
    "WeightsMismatchError",
    "assign_state_dict",
    "convert_checkpoint",
    "load_state_dict",
    "load_weights_file",
    "read_checkpoint",
]
