"""Converts a released PolyNet PyTorch checkpoint into a Keras model and a `.weights.h5` file.

No PyTorch is needed: the checkpoint (zip or legacy `torch.save` format) is
read by `polynet_tf.weights.torch_format`. Paths may be URIs (`gs://...`).
The caller builds the model to fill (this package does not build networks);
the command line is `python -m polynet_tf.convert_weights`.
"""

import os

import keras

from polynet_tf.weights.checkpoint import read_checkpoint, save_weights_atomically
from polynet_tf.weights.layouts import LAYOUTS
from polynet_tf.weights.mapping import assign_state_dict


def convert_checkpoint(checkpoint, output, source, model):
    """Fills `model` from a PyTorch checkpoint of the released PolyNet and saves it.

    Args:
        checkpoint: path of the `.pth` file (or pytorchcv's `.pth.zip`).
        output: path of the Keras weights file to write; must end in
            `.weights.h5`. Written atomically (temporary name + rename).
        source: the checkpoint layout, "pretrainedmodels" or "pytorchcv".
        model: the Keras model to fill, e.g.
            `PolyNet(architecture="very_deep", weights=None)` (with the top),
            or a function returning it, called once the checkpoint has been
            read (a full-size network built for a file that cannot be read
            is wasted). Every tensor must find its weight and vice versa.

    Returns:
        The output path.

    Raises:
        CheckpointMismatchError: a missing, unused or wrongly shaped tensor
            (the message names the first bad key); nothing is written.
        CheckpointError: the file is not a readable state dict (empty,
            truncated, or pickling anything but tensors).
        ValueError: unknown source or bad output name.
    """
    if source not in LAYOUTS:
        raise ValueError(f"`source` must be one of {LAYOUTS}. Received: source={source!r}")
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(f"`output` must end in `.weights.h5`. Received: output={output}")
    state_dict = read_checkpoint(checkpoint)
    if not isinstance(model, keras.Model):
        model = model()
    assign_state_dict(model, state_dict, source, source_name=os.fspath(checkpoint))
    del state_dict
    return save_weights_atomically(model, output)
