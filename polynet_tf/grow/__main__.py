r"""Command line of initialization by insertion (paper section 4, Fig. 9).

Usage:

    python -m polynet_tf.grow --from_architecture ir_3_6_3 \
        --from_checkpoint small.weights.h5 --to_architecture ir_6_12_6_mixed \
        --output grown.weights.h5 [--mode paper|function_preserving] \
        [--width_multiplier 1.0] [--classes 1000] [--path_gates] [--dry_run]

Writes OUT, OUT.mapping.txt and OUT.mapping.json; exits with status 2 and
writes nothing when a layer cannot be mapped.
"""

import argparse
import sys

from polynet_tf.grow.errors import GrowthError
from polynet_tf.grow.files import grow
from polynet_tf.grow.plan_types import MODES


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m polynet_tf.grow",
        description="Grow a trained PolyNet into a bigger one (initialization by "
                    "insertion, PolyNet paper section 4, Fig. 9).",
    )
    parser.add_argument("--from_architecture", required=True,
                        help="source preset name or stage spec, e.g. ir_3_6_3")
    parser.add_argument("--from_checkpoint", required=True,
                        help=".weights.h5 / .keras file, TF checkpoint directory or prefix")
    parser.add_argument("--to_architecture", required=True,
                        help="target preset name or stage spec, e.g. ir_6_12_6_mixed")
    parser.add_argument("--output", required=True, help="target weights, *.weights.h5")
    parser.add_argument("--mode", choices=MODES, default="paper",
                        help="paper: new weights freshly initialized (Glorot); "
                             "function_preserving: new paths start at 0")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--residual_scale", type=float, default=None,
                        help="beta of every module of both networks (default: each "
                             "architecture's own)")
    parser.add_argument("--path_gates", action="store_true",
                        help="build the target with path gates (function_preserving "
                             "growth into fully shared poly-k modules needs them)")
    parser.add_argument("--source_path_gates", action="store_true",
                        help="the source network was built with path gates")
    parser.add_argument("--init_seed", type=int, default=None,
                        help="seed of the new weights' initialization")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the mapping report, write nothing")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the command line; returns the exit status."""
    args = _parse_args(argv)
    options = {"width_multiplier": args.width_multiplier, "classes": args.classes}
    if args.residual_scale is not None:
        options["residual_scale"] = args.residual_scale
    try:
        grow(
            args.from_architecture, args.from_checkpoint, args.to_architecture, args.output,
            mode=args.mode, path_gates=args.path_gates,
            source_path_gates=args.source_path_gates, init_seed=args.init_seed,
            dry_run=args.dry_run, verbose=not args.quiet, **options,
        )
    except (GrowthError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
