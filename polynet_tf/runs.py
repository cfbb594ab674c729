"""The layout of a training run's model directory, and reading it back.

A run directory (`--model_dir` of `python -m polynet_tf.train`) holds
`params.yaml` (the merged configuration), TensorBoard summaries in `train/`
and `eval/` (tags in `polynet_tf.training.reporting`: loss, top1, top5,
learning_rate, images_per_second), checkpoints in `checkpoints/`,
evaluator reports `evaluation*.json` and the continuous evaluator's reports
and record in `continuous_eval/`. This module is the one place that
knows these names: the trainer, evaluation, export, growth and fine-tuning
find a run's files through it (`find_checkpoint`, `params_beside`). The
readers below need no model, for figures and comparisons. `model_dir` may be
any TensorFlow filesystem URI (`gs://bucket/run`): everything is read through
`tf.io.gfile`.
"""

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from polynet_tf import fileio

PARAMS_FILE = "params.yaml"
CHECKPOINTS_SUBDIR = "checkpoints"
TRAIN_SUMMARIES_SUBDIR = "train"
EVAL_SUMMARIES_SUBDIR = "eval"
# The continuous evaluator's reports (one per checkpoint) and its record.
CONTINUOUS_EVAL_SUBDIR = "continuous_eval"
# Evaluator reports (`python -m polynet_tf.evaluate ... --output FILE`) that
# count as a run's result: JSON files named like this in the run directory
# (the demo writes MODEL_DIR/evaluation_<protocol>.json).
EVALUATION_JSON_PATTERN = "evaluation*.json"


class RunError(ValueError):
    """A run directory lacks what is needed: the message names it and the remedy."""


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The final evaluation of one run.

    Attributes:
        top1: top-1 accuracy in [0, 1].
        top5: top-5 accuracy in [0, 1], or None when unknown.
        step: training step the evaluation belongs to (None if unknown).
        source: file the numbers were read from.
    """

    top1: float
    top5: Optional[float]
    step: Optional[int]
    source: str


def params_path(model_dir: str) -> str:
    """Where a run keeps its merged configuration."""
    return fileio.join(model_dir, PARAMS_FILE)


def summaries_dir(model_dir: str, kind: str) -> str:
    """Where a run keeps its TensorBoard summaries of `kind` ("train" or "eval").

    Raises:
        ValueError: another kind.
    """
    subdirs = {"train": TRAIN_SUMMARIES_SUBDIR, "eval": EVAL_SUMMARIES_SUBDIR}
    if kind not in subdirs:
        raise ValueError(f"Summaries are 'train' or 'eval'; received {kind!r}.")
    return fileio.join(model_dir, subdirs[kind])


def checkpoints_dir(model_dir: str) -> str:
    """Where a run keeps its checkpoints."""
    return fileio.join(model_dir, CHECKPOINTS_SUBDIR)


def continuous_eval_dir(model_dir: str) -> str:
    """Where the continuous evaluator keeps its per-checkpoint reports and its record."""
    return fileio.join(model_dir, CONTINUOUS_EVAL_SUBDIR)


def find_checkpoint(path: str) -> Tuple[Optional[str], str]:
    """The checkpoint a path names: a run's model_dir, its checkpoints/ folder or a prefix.

    Args:
        path: model_dir, checkpoints folder or checkpoint prefix (`.../ckpt-600`).

    Returns:
        (prefix, folder): the latest checkpoint prefix in the folder (None when
        the folder holds none), and the folder it is in.

    Raises:
        FileNotFoundError: `path` is neither a folder nor a checkpoint prefix.
    """
    if fileio.isdir(path):
        subdir = checkpoints_dir(path)
        folder = subdir if fileio.isdir(subdir) else path
        return tf.train.latest_checkpoint(folder), folder
    if tf.io.gfile.exists(path + ".index"):
        return path, fileio.dirname(path)
    raise FileNotFoundError(
        f"Checkpoint {path!r} does not exist: give a training model_dir, its "
        f"{CHECKPOINTS_SUBDIR}/ folder or a checkpoint prefix (with its .index file).")


def params_beside(folder: str) -> Optional[str]:
    """The run's params.yaml for a checkpoint folder (in it or one level up), or None."""
    for candidate in (params_path(folder), params_path(fileio.dirname(folder.rstrip("/")))):
        if fileio.isfile(candidate):
            return candidate
    return None


def read_params(model_dir: str) -> dict:
    """Returns the run's merged configuration (`params.yaml`) as a dict.

    Raises:
        RunError: if `model_dir/params.yaml` is missing or unreadable.
    """
    import yaml  # noqa: PLC0415

    path = params_path(model_dir)
    if not fileio.isfile(path):
        raise RunError(f"{model_dir!r} is not a training run: it has no {PARAMS_FILE} "
                       "(python -m polynet_tf.train writes it into --model_dir).")
    params = yaml.safe_load(fileio.read_text(path))
    if not isinstance(params, dict) or "model" not in params:
        raise RunError(f"{path!r} is not a polynet_tf configuration (no 'model' section).")
    return params


def read_scalars(log_dir: str) -> Dict[str, List[Tuple[int, float]]]:
    """Reads every scalar summary in the event files of `log_dir`.

    Args:
        log_dir: a summary folder such as `MODEL_DIR/train` or `MODEL_DIR/eval`.

    Returns:
        tag -> [(step, value)] sorted by step; a step written twice (a resumed
        run) keeps its last value. Empty if the folder has no event files.
    """
    # tag -> step -> ((wall time, file, position), value). The latest write wins
    # by wall time, not by file name: two writers started within the same
    # second have names that sort in no particular order.
    values: Dict[str, Dict[int, Tuple[Tuple[float, int, int], float]]] = {}
    paths = fileio.glob(fileio.join(log_dir, "events.out.tfevents.*"))
    for file_index, path in enumerate(paths):
        for position, record in enumerate(tf.data.TFRecordDataset(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            when = (float(event.wall_time), file_index, position)
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                points = values.setdefault(value.tag, {})
                step = int(event.step)
                if step not in points or points[step][0] <= when:
                    points[step] = (when, number)
    return {tag: sorted((step, number) for step, (_, number) in points.items())
            for tag, points in values.items()}


def final_eval_result(model_dir: str, protocol: Optional[str] = None) -> EvalResult:
    """The evaluation result of a finished run.

    The rule: an evaluator report in `model_dir` (`evaluation*.json` with a
    `top1_accuracy` entry; with `protocol`, the one whose protocol name
    matches) wins;
    otherwise the trainer's last validation summaries (`eval/` top1 and top5),
    which must belong to the run's last step (`trainer.train_steps`).

    Args:
        model_dir: the run directory.
        protocol: evaluator protocol to pick among several JSON files (e.g.
            "single"); None takes the only one, or "single" among several.
            Only None and "single" fall back to the trainer's summaries.

    Returns:
        An `EvalResult`.

    Raises:
        RunError: no result, an unfinished run, or an ambiguous choice; the
            message says what to run.
    """
    result = _from_evaluator_json(model_dir, protocol)
    if result is not None:
        return result
    if protocol not in (None, "single"):
        raise RunError(f"Run {model_dir!r} has no {protocol} evaluation report "
                       f"({EVALUATION_JSON_PATTERN} with that protocol); the trainer's own "
                       "validation is a single crop. Run python -m polynet_tf.evaluate "
                       f"--protocol {protocol} --output MODEL_DIR/evaluation_{protocol}.json.")
    params = read_params(model_dir)
    scalars = read_scalars(summaries_dir(model_dir, "eval"))
    if "top1" not in scalars:
        raise RunError(
            f"Run {model_dir!r} has no evaluation result: no {EVALUATION_JSON_PATTERN} file and "
            "no validation summaries in eval/. Train with --mode train_and_eval, or evaluate it "
            "(python -m polynet_tf.evaluate --checkpoint MODEL_DIR ... --output "
            f"{fileio.join(model_dir, 'evaluation_single.json')}).")
    step, top1 = scalars["top1"][-1]
    train_steps = params.get("trainer", {}).get("train_steps")
    if train_steps is not None and step < train_steps:
        raise RunError(f"Run {model_dir!r} is not finished: its last evaluation is at step "
                       f"{step} of {train_steps}. Finish training (run the same command again) "
                       "or evaluate it.")
    top5 = dict(scalars.get("top5", [])).get(step)
    return EvalResult(top1, top5, step, fileio.join(model_dir, "eval"))


def _from_evaluator_json(model_dir, protocol):
    found = []
    for path in fileio.glob(fileio.join(model_dir, EVALUATION_JSON_PATTERN)):
        try:
            data = fileio.read_json(path)
        except (OSError, tf.errors.OpError, json.JSONDecodeError) as error:
            raise RunError(f"Cannot read the evaluation result {path!r}: {error}") from None
        if isinstance(data, dict) and "top1_accuracy" in data:
            found.append((path, data))
    if protocol is not None:
        found = [(p, d) for p, d in found if _protocol_name(d) == protocol]
    elif len(found) > 1:
        single = [(p, d) for p, d in found if _protocol_name(d) == "single"]
        if len(single) != 1:
            raise RunError(f"Run {model_dir!r} has several evaluation results "
                           f"({', '.join(fileio.basename(p) for p, _ in found)}); choose one "
                           "with --protocol.")
        found = single
    if not found:
        return None
    if len(found) > 1:
        raise RunError(f"Run {model_dir!r} has several results for protocol {protocol!r}: "
                       f"{', '.join(fileio.basename(p) for p, _ in found)}; keep one.")
    path, data = found[0]
    top5 = data.get("top5_accuracy")
    return EvalResult(float(data["top1_accuracy"]), None if top5 is None else float(top5),
                      None, path)


def _protocol_name(report):
    protocol = report.get("protocol")
    return protocol.get("name") if isinstance(protocol, dict) else protocol


# ------------------------------------------------- weight averages (EMA)
EMA_CHECKPOINT_KEY = "ema"  # tf.train.Checkpoint(ema=...) of a training run


class AveragesNode(tf.__internal__.tracking.AutoTrackable):
    """Checkpoint node of a run's EMA: `averages` maps a weight's path to its average.

    `polynet_tf.training.ema` writes it; `restore_averages` reads it.
    """

    def __init__(self, averages):
        self.averages = averages


def restore_averages(model, prefix):
    """Loads a training checkpoint's EMA into `model`'s weights that have one.

    Args:
        model: the built model, already restored from `prefix` (raw weights).
        prefix: the checkpoint prefix.

    Returns:
        How many weights were replaced by their average (0: the run kept no EMA).
    """
    stored = {name for name, _ in tf.train.list_variables(prefix)}
    targets = {v.path: v for v in model.weights
               if _checkpoint_name(v.path) in stored}
    if targets:
        tf.train.Checkpoint(**{EMA_CHECKPOINT_KEY: AveragesNode(targets)}).restore(
            prefix).expect_partial()
    return len(targets)


def has_averages(prefix):
    """Whether the training checkpoint `prefix` holds an EMA of its weights."""
    return any(name.startswith(f"{EMA_CHECKPOINT_KEY}/averages/")
               for name, _ in tf.train.list_variables(prefix))


def _checkpoint_name(path):
    # tf.train.Checkpoint escapes "/" in a dict key as ".S" ("." itself as "..").
    key = path.replace(".", "..").replace("/", ".S")
    return f"{EMA_CHECKPOINT_KEY}/averages/{key}/.ATTRIBUTES/VARIABLE_VALUE"
