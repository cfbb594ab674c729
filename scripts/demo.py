"""The main job, end to end on real images: `python scripts/demo.py` (or `scripts/demo.sh`).

Writes scikit-learn's handwritten digits as JPEG class folders, builds
TFRecord shards, trains a tiny PolyNet on 2 local workers, evaluates it
(single and multi-crop), exports a SavedModel, classifies held-out images
through its serving_default signature, and writes a report (training curves,
crop boxes, predictions, accuracy against cost). Each step is printed as the
command a user would type, then run.

Usage:
    python scripts/demo.py [--work_dir demo_output] [--quick] [--train_steps N]
        [--max_per_class N] [--num_workers 2] [--params_override "a.b=1"] [--fresh]
    python scripts/demo.py --print_commands     # the README's command list
"""

import os
import sys

from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from polynet_tf import cli  # noqa: E402
from polynet_tf.demo import pipeline  # noqa: E402

# A smaller run (the test suite's): 40 digits per class, 3 modules, fewer steps.
QUICK = {"max_per_class": 40, "train_steps": 120, "multicrop_max_images": 10,
         "overrides": "model.architecture=A: 2way | B: 2way | C: 2way,trainer.eval_interval=120,"
                      "trainer.checkpoint_interval=120,schedule.decay_steps=90"}


_PROG = "python scripts/demo.py"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("work_dir", "demo_output", "New folder for everything (any URI).",
                    flag_values=FLAGS)
flags.DEFINE_bool("quick", False, "A smaller run: 40 digits per class, 3 modules, 120 steps.",
                  flag_values=FLAGS)
flags.DEFINE_integer("max_per_class", None, "Digits per class (default: all, about 180).",
                     lower_bound=2, flag_values=FLAGS)
flags.DEFINE_integer("train_steps", None, "Training steps (default: the configuration's).",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("num_workers", 2, "Local training workers.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("params_override", "", "Further training overrides, e.g. "
                    "'model.width_multiplier=0.0625'.", flag_values=FLAGS)
flags.DEFINE_bool("fresh", False, "Replace the --work_dir of an earlier demo run.",
                  flag_values=FLAGS)
flags.DEFINE_bool("print_commands", False, "Print the commands (as in the README) and exit.",
                  flag_values=FLAGS)


def options_from_flags(args):
    """Returns `(DemoOptions, print_commands)` from parsed flags."""
    values = dict(QUICK) if args.quick else {}
    for key in ("max_per_class", "train_steps"):
        if args[key].value is not None:
            values[key] = args[key].value
    if args.params_override:
        values["overrides"] = ",".join(filter(None, [values.get("overrides"),
                                                     args.params_override]))
    options = pipeline.DemoOptions(work_dir=args.work_dir, num_workers=args.num_workers,
                                   fresh=args.fresh, **values)
    return options, args.print_commands


def parse_options(argv=None):
    """Returns `(DemoOptions, print_commands)` from the command line.

    Raises:
      SystemExit: after --help (0) or a usage error (2).
    """
    status = cli.parse(_PROG, __doc__, FLAGS, argv)
    if status >= 0:
        raise SystemExit(status)
    return options_from_flags(FLAGS)


def _run(args):
    options, print_only = options_from_flags(args)
    if print_only:
        print("\n".join(pipeline.shell_lines(pipeline.commands(options))))
        return 0
    os.chdir(_ROOT)  # the commands use paths relative to the checkout
    try:
        pipeline.run_demo(options)
    except (pipeline.StepFailed, FileExistsError) as error:
        return cli.fail(_PROG, str(error), status=1)
    return 0


def main(argv=None):
    """Exit status: 0 every step ran, 1 a step failed (named), 2 usage error."""
    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=())


if __name__ == "__main__":
    cli.app_run(main)
