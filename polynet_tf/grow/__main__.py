r"""Command line of initialization by insertion (paper section 4, Fig. 9).

Usage:

    python -m polynet_tf.grow --from_architecture ir_3_6_3 \
        --from_checkpoint small.weights.h5 --to_architecture ir_6_12_6_mixed \
        --output grown.weights.h5 [--mode paper|function_preserving] \
        [--width_multiplier 1.0] [--classes 1000] [--path_gates] [--dry_run]

Writes OUT, OUT.mapping.txt and OUT.mapping.json; exits with status 2 and
writes nothing when a layer cannot be mapped.
"""


from absl import flags

from polynet_tf import cli
from polynet_tf.grow.errors import GrowthError
from polynet_tf.grow.files import grow
from polynet_tf.grow.plan_types import MODES

_PROG = "python -m polynet_tf.grow"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("from_architecture", None, "Source preset name or stage spec, e.g. "
                    "ir_3_6_3.", flag_values=FLAGS)
flags.DEFINE_string("from_checkpoint", None, ".weights.h5 / .keras file, TF checkpoint "
                    "directory or prefix (any URI).", flag_values=FLAGS)
flags.DEFINE_string("to_architecture", None, "Target preset name or stage spec, e.g. "
                    "ir_6_12_6_mixed.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Target weights, *.weights.h5 (any URI).", flag_values=FLAGS)
flags.DEFINE_enum("mode", "paper", list(MODES), "paper: new weights freshly initialized "
                  "(Glorot); function_preserving: new paths start at 0.", flag_values=FLAGS)
flags.DEFINE_float("width_multiplier", 1.0, "Width of both networks (> 0).",
                   lower_bound=1e-6, flag_values=FLAGS)
flags.DEFINE_integer("classes", 1000, "Classes of both networks (>= 1).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_float("residual_scale", None, "beta of every module of both networks "
                   "(default: each architecture's own).", flag_values=FLAGS)
flags.DEFINE_bool("path_gates", False, "Build the target with path gates "
                  "(function_preserving growth into fully shared poly-k modules needs "
                  "them).", flag_values=FLAGS)
flags.DEFINE_bool("source_path_gates", False, "The source network was built with path "
                  "gates.", flag_values=FLAGS)
flags.DEFINE_integer("init_seed", None, "Seed of the new weights' initialization.",
                     flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the mapping report, write nothing.", flag_values=FLAGS)
flags.DEFINE_bool("quiet", False, "Do not print the report.", flag_values=FLAGS)
for name in ("from_architecture", "from_checkpoint", "to_architecture", "output"):
    flags.mark_flag_as_required(name, flag_values=FLAGS)


def _run(args):
    options = {"width_multiplier": args.width_multiplier, "classes": args.classes}
    if args.residual_scale is not None:
        options["residual_scale"] = args.residual_scale
    grow(
        args.from_architecture, args.from_checkpoint, args.to_architecture, args.output,
        mode=args.mode, path_gates=args.path_gates,
        source_path_gates=args.source_path_gates, init_seed=args.init_seed,
        dry_run=args.dry_run, verbose=not args.quiet, **options,
    )
    return 0


def main(argv=None):
    """Runs the command line; returns the exit status (0 done, 2 refused, nothing written)."""
    return cli.run(_PROG, __doc__, FLAGS, _run, argv,
                   usage_errors=(GrowthError, ValueError))


if __name__ == "__main__":
    cli.app_run(main)
