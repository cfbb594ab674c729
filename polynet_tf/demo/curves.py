"""Training curves of a run as a PNG, from the TensorBoard summaries it wrote.

    python -m polynet_tf.demo.curves --model_dir RUN --output curves.png

Three panels: the training loss (and validation loss), top-1 accuracy of the
training batches and of the validation set, and the learning rate.
"""

from typing import Dict, List, Optional, Tuple

from absl import flags

from polynet_tf import cli, fileio
from polynet_tf.figures import png_figure
from polynet_tf.runs import read_scalars, summaries_dir

Series = Dict[str, List[Tuple[int, float]]]


def load_curves(model_dir: str) -> Tuple[Series, Series]:
    """Returns `(train, eval)` scalars of a run (see `runs.read_scalars`).

    Raises:
        FileNotFoundError: if the run has no training summaries.
    """
    train = read_scalars(summaries_dir(model_dir, "train"))
    if "loss" not in train:
        raise FileNotFoundError(
            f"{model_dir!r} has no training summaries in train/: is it the --model_dir of a "
            "python -m polynet_tf.train run (on the chief)?")
    return train, read_scalars(summaries_dir(model_dir, "eval"))


def plot_curves(model_dir: str, output: str) -> str:
    """Draws loss, top-1 and learning rate against the step; writes `output`.

    Returns:
        `output`.
    """
    train, evaluation = load_curves(model_dir)
    panels = (("loss", "loss"), ("top1", "top-1 accuracy"), ("learning_rate", "learning rate"))
    with png_figure(output, 1, 3, figsize=(13, 3.8), dpi=100) as (figure, axes):
        for ax, (tag, title) in zip(axes, panels):
            for name, series, style in (("training batches", train, "-"),
                                        ("validation", evaluation, "o-")):
                if tag in series:
                    steps, values = zip(*series[tag])
                    ax.plot(steps, values, style, label=name, markersize=4)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if tag != "learning_rate":
                ax.legend(fontsize=8)
        figure.suptitle(f"Training curves: {fileio.basename(model_dir)}")
    return output


_PROG = "python -m polynet_tf.demo.curves"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("model_dir", None, "The run's --model_dir.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "PNG file to write.", flag_values=FLAGS)
flags.mark_flags_as_required(["model_dir", "output"], flag_values=FLAGS)


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 written, 2 usage error or no training curves in the run."""
    from polynet_tf import cli  # noqa: PLC0415

    return cli.run(_PROG, __doc__, FLAGS, _run, argv,
                   usage_errors=(FileNotFoundError, ValueError))


def _run(args) -> int:
    plot_curves(args.model_dir, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    cli.app_run(main)
