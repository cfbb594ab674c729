"""Accuracy against cost of finished runs, like the paper's Fig. 6.

    python -m polynet_tf.plot_runs MODEL_DIR [MODEL_DIR ...] --output FILE.png \\
        [--metric top1_accuracy|top5_error|top1_error] [--protocol single] [--labels a,b]

One point per run, labelled: x is the multiply-adds per image of the run's
network (`polynet_tf.models.complexity.network_cost` of the architecture,
width, classes and evaluation image size in the run's `params.yaml`), y the
run's final evaluation result (`polynet_tf.runs.final_eval_result`: the
evaluator's JSON if the run has one, else the trainer's last validation
summaries). A run without a result is an error that names it. The PNG is
rendered in memory, written under a temporary name and renamed. Run
directories and `--output` may be TensorFlow filesystem URIs (`gs://...`).
"""

import dataclasses
from typing import List, Optional, Sequence

from absl import flags

from polynet_tf import cli, fileio
from polynet_tf.figures import png_figure
from polynet_tf.configs.experiment import ModelConfig
from polynet_tf.models.architectures import default_size
from polynet_tf.models.complexity import network_cost
from polynet_tf.runs import RunError, final_eval_result, read_params

METRICS = {
    "top1_accuracy": ("top-1 accuracy (%)", lambda r: 100.0 * r.top1),
    "top1_error": ("top-1 error (%)", lambda r: 100.0 * (1.0 - r.top1)),
    "top5_error": ("top-5 error (%)", lambda r: None if r.top5 is None else 100.0 * (1.0 - r.top5)),
}


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """One run on the plot.

    Attributes:
        label: text next to the point.
        multiply_adds: per image, at the evaluation image size.
        value: the plotted metric (percent).
        model_dir: the run directory.
        architecture: the run's `model.architecture`.
        source: where the evaluation result was read.
    """

    label: str
    multiply_adds: int
    value: float
    model_dir: str
    architecture: str
    source: str


def run_point(model_dir: str, metric: str = "top1_accuracy", protocol: Optional[str] = None,
              label: Optional[str] = None) -> RunPoint:
    """Computes the plotted point of one run.

    Args:
        model_dir: a finished training run.
        metric: a key of `METRICS`.
        protocol: evaluator protocol to read (see `final_eval_result`).
        label: text of the point; default the folder name.

    Returns:
        A `RunPoint`.

    Raises:
        RunError: the run lacks a configuration or result, or `metric` is
            unknown or not available for it.
    """
    if metric not in METRICS:
        raise RunError(f"Unknown metric {metric!r}; choose one of {sorted(METRICS)}.")
    params = read_params(model_dir)
    model = params["model"]
    image_size = params.get("eval_data", {}).get("image_size") or params.get(
        "train_data", {}).get("image_size")
    architecture = model.get("architecture", ModelConfig.architecture)
    cost = network_cost(architecture, image_size or default_size(architecture),
                        model.get("width_multiplier", 1.0), classes=model.get("num_classes", 1000))
    result = final_eval_result(model_dir, protocol)
    value = METRICS[metric][1](result)
    if value is None:
        raise RunError(f"Run {model_dir!r} has no top-5 result ({result.source}); "
                       "use --metric top1_accuracy or top1_error.")
    name = label or fileio.basename(model_dir)
    return RunPoint(name, cost.multiply_adds, value, model_dir, str(model.get("architecture")),
                    result.source)


def plot_points(points: Sequence[RunPoint], output: str, metric: str = "top1_accuracy",
                title: str = "Accuracy against cost") -> str:
    """Draws the labelled points and writes a PNG atomically.

    Returns:
        `output`.
    """
    # Giga for ImageNet-sized networks, mega for the tiny ones of tests and demos.
    largest = max(point.multiply_adds for point in points)
    divisor, unit = (1e9, "G") if largest >= 1e9 else (1e6, "M")
    with png_figure(output, figsize=(6.4, 4.8), dpi=100) as (_, axes):
        for point in points:
            x = point.multiply_adds / divisor
            axes.scatter([x], [point.value], s=36)
            axes.annotate(point.label, (x, point.value), textcoords="offset points",
                          xytext=(5, 4), fontsize=8)
        axes.set_xlabel(f"multiply-adds per image ({unit})")
        axes.set_ylabel(METRICS[metric][0])
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
    return output


_PROG = "python -m polynet_tf.plot_runs"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("output", None, "PNG file to write (any URI).", flag_values=FLAGS)
flags.DEFINE_enum("metric", "top1_accuracy", sorted(METRICS), "What the y axis shows.",
                  flag_values=FLAGS)
flags.DEFINE_string("protocol", None, "Evaluator protocol to read when a run has several "
                    "results.", flag_values=FLAGS)
flags.DEFINE_list("labels", None, "Comma-separated labels, one per run (default: folder names).",
                  flag_values=FLAGS)
flags.DEFINE_string("title", "Accuracy against cost", "Figure title.", flag_values=FLAGS)
flags.mark_flags_as_required(["output"], flag_values=FLAGS)


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m polynet_tf.plot_runs MODEL_DIR... --output PNG`; returns the exit status.

    0 done, 2 usage error or a run without a result (named).
    """
    from polynet_tf import cli  # noqa: PLC0415

    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=(RunError,),
                   positional="MODEL_DIR")


def _run(args) -> int:
    from polynet_tf import cli  # noqa: PLC0415

    model_dirs = args.positional_arguments
    labels = [None] * len(model_dirs)
    if args.labels is not None:
        labels = args.labels
        if len(labels) != len(model_dirs):
            raise cli.UsageError(f"--labels has {len(labels)} labels for {len(model_dirs)} "
                                 "runs.")
    points = [run_point(model_dir, args.metric, args.protocol, label)
              for model_dir, label in zip(model_dirs, labels)]
    plot_points(points, args.output, args.metric, args.title)
    for point in points:
        print(f"{point.label}: {point.multiply_adds / 1e6:,.1f} M multiply-adds, "
              f"{METRICS[args.metric][0]} {point.value:.2f} ({point.source})")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    cli.app_run(main)
