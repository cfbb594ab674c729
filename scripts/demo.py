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

import argparse
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from polynet_tf.demo import pipeline  # noqa: E402

# A smaller run (the test suite's): 40 digits per class, 3 modules, fewer steps.
QUICK = {"max_per_class": 40, "train_steps": 120, "multicrop_max_images": 10,
         "overrides": "model.architecture=A: 2way | B: 2way | C: 2way,trainer.eval_interval=120,"
                      "trainer.checkpoint_interval=120,schedule.decay_steps=90"}


def parse_options(argv=None):
    """Returns `(DemoOptions, print_commands)` from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="demo_output", help="new folder for everything")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 40 digits per class, 3 modules, 120 steps")
    parser.add_argument("--max_per_class", type=int, default=None,
                        help="digits per class (default: all, about 180)")
    parser.add_argument("--train_steps", type=int, default=None,
                        help="training steps (default: the configuration's)")
    parser.add_argument("--num_workers", type=int, default=2, help="local training workers")
    parser.add_argument("--params_override", default="",
                        help="further training overrides, e.g. 'model.width_multiplier=0.0625'")
    parser.add_argument("--fresh", action="store_true",
                        help="replace the --work_dir of an earlier demo run")
    parser.add_argument("--print_commands", action="store_true",
                        help="print the commands (as in the README) and exit")
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for key in ("max_per_class", "train_steps"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.params_override:
        values["overrides"] = ",".join(filter(None, [values.get("overrides"),
                                                     args.params_override]))
    if args.num_workers < 1:
        parser.error("--num_workers must be >= 1")
    options = pipeline.DemoOptions(work_dir=args.work_dir, num_workers=args.num_workers,
                                   fresh=args.fresh, **values)
    return options, args.print_commands


def main(argv=None):
    options, print_only = parse_options(argv)
    if print_only:
        print("\n".join(pipeline.shell_lines(pipeline.commands(options))))
        return 0
    os.chdir(_ROOT)  # the commands use paths relative to the checkout
    try:
        pipeline.run_demo(options)
    except (pipeline.StepFailed, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
