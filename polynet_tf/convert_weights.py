"""Converts a released PolyNet PyTorch checkpoint to a Keras `.weights.h5` file.

Usage:

    python -m polynet_tf.convert_weights --source pretrainedmodels \\
        --checkpoint polynet-f71d82a5.pth --output polynet.weights.h5
    python -m polynet_tf.convert_weights --source pytorchcv \\
        --checkpoint polynet-0452-6a1b295d.pth --output polynet.weights.h5

No PyTorch is needed. Paths may be URIs (`gs://...`). The output loads into
`PolyNet(architecture=ARCHITECTURE, weights=OUTPUT)`, with or without the top.
Every tensor must find its Keras weight and vice versa; otherwise nothing is
written and the error names the first bad key.
"""


from absl import flags

from polynet_tf import cli
from polynet_tf.models.polynet import PolyNet
from polynet_tf.weights.convert import convert_checkpoint
from polynet_tf.weights.layouts import LAYOUTS

_PROG = "python -m polynet_tf.convert_weights"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_enum("source", None, list(LAYOUTS), "Checkpoint layout: pretrainedmodels "
                  "(polynet-f71d82a5.pth) or pytorchcv (polynet-0452-6a1b295d.pth).",
                  flag_values=FLAGS)
flags.DEFINE_string("checkpoint", None, "The .pth (or pytorchcv .pth.zip) file.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "The Keras file to write (*.weights.h5).", flag_values=FLAGS)
flags.DEFINE_string("architecture", None, "The preset the checkpoint was trained as "
                    "(default: PolyNet()'s, the released Very Deep PolyNet).", flag_values=FLAGS)
flags.mark_flags_as_required(["source", "checkpoint", "output"], flag_values=FLAGS)


def _run(args):
    try:
        preset = {"architecture": args.architecture} if args.architecture else {}
        # Built once the checkpoint is read: not for a file that is missing or unreadable.
        path = convert_checkpoint(args.checkpoint, args.output, args.source,
                                  lambda: PolyNet(weights=None, **preset))
    except (ValueError, OSError) as error:
        return cli.fail(_PROG, str(error), status=1)
    print(f"Wrote {path}")
    return 0


def main(argv=None):
    """Command-line entry point; returns the exit status.

    0 written, 1 the checkpoint cannot be converted (nothing written), 2 usage error.
    """
    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=())


if __name__ == "__main__":
    cli.app_run(main)
