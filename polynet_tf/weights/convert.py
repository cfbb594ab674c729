"""Converts a released PolyNet PyTorch checkpoint to a Keras `.weights.h5` file.

Usage:

    python -m polynet_tf.weights.convert --source pretrainedmodels \\
        --checkpoint polynet-f71d82a5.pth --output polynet.weights.h5
    python -m polynet_tf.weights.convert --source pytorchcv \\
        --checkpoint polynet-0452-6a1b295d.pth --output polynet.weights.h5

No PyTorch is needed: the checkpoint (zip or legacy `torch.save` format) is
read by `polynet_tf.weights.torch_format`. Paths may be URIs (`gs://...`).
The output loads into `PolyNet(architecture="very_deep", weights=OUTPUT)`, with
or without the top. Every tensor must find its Keras weight and vice versa;
otherwise nothing is written and the error names the first bad key.
"""

import os
import sys

from polynet_tf.weights.checkpoint import read_checkpoint, save_weights_atomically
from polynet_tf.weights.layouts import LAYOUTS
from polynet_tf.weights.mapping import assign_state_dict


def convert_checkpoint(checkpoint, output, source, model=None):
    """Converts a PyTorch checkpoint of the released PolyNet to `.weights.h5`.

    Args:
        checkpoint: path of the `.pth` file (or pytorchcv's `.pth.zip`).
        output: path of the Keras weights file to write; must end in
            `.weights.h5`. Written atomically (temporary name + rename).
        source: the checkpoint layout, "pretrainedmodels" or "pytorchcv".
        model: the Keras model to fill; by default a new
            `PolyNet(architecture="very_deep", weights=None)` (with top).

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
    if model is None:
        # Imported here: polynet_tf.weights depends on polynet_tf.layers only,
        # except for building the default model.
        from polynet_tf.models.polynet import PolyNet  # pylint: disable=import-outside-toplevel  # noqa: PLC0415

        model = PolyNet(architecture="very_deep", weights=None)
    assign_state_dict(model, state_dict, source, source_name=os.fspath(checkpoint))
    del state_dict
    return save_weights_atomically(model, output)


_PROG = "python -m polynet_tf.weights.convert"


def _define_flags(flag_values):
    from polynet_tf import cli  # noqa: PLC0415

    define = cli.definer(flag_values)
    define.enum("source", None, list(LAYOUTS), "Checkpoint layout: pretrainedmodels "
                "(polynet-f71d82a5.pth) or pytorchcv (polynet-0452-6a1b295d.pth).")
    define.string("checkpoint", None, "The .pth (or pytorchcv .pth.zip) file.")
    define.string("output", None, "The Keras file to write (*.weights.h5).")
    define.required("source", "checkpoint", "output")


def _run(args):
    from polynet_tf import cli  # noqa: PLC0415

    try:
        path = convert_checkpoint(args.checkpoint, args.output, args.source)
    except (ValueError, OSError) as error:
        return cli.fail(_PROG, str(error), status=1)
    print(f"Wrote {path}")
    return 0


def main(argv=None):
    """Command-line entry point; returns the exit status.

    0 written, 1 the checkpoint cannot be converted (nothing written), 2 usage error.
    """
    from polynet_tf import cli  # noqa: PLC0415

    return cli.run(_PROG, __doc__, _define_flags, _run, argv, usage_errors=())


if __name__ == "__main__":
    sys.exit(main())
