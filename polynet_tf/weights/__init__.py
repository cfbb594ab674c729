"""Published PolyNet weights: PyTorch checkpoint conversion and `weights="imagenet"`.

Depends on `polynet_tf.layers`, keras, numpy and h5py; torch (optional extra
`convert`) is imported only inside the functions that read checkpoints.
"""

from polynet_tf.weights.checkpoint import CheckpointError, read_checkpoint
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


def __getattr__(name):
    # Imported lazily so that `python -m polynet_tf.weights.convert` does not find
    # its own module already imported by the package (runpy's RuntimeWarning).
    if name == "convert_checkpoint":
        from polynet_tf.weights.convert import convert_checkpoint  # noqa: PLC0415
        return convert_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
