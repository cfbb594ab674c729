"""A side-car evaluator: each new checkpoint of a training run, evaluated once.

`evaluate_continuously` watches a run's `checkpoints/` folder
(`tf.train.checkpoints_iterator`: the latest complete checkpoint, polled
every second) and evaluates every checkpoint it sees, in a process of its
own beside the training workers, which it never waits on or slows: it only
reads their checkpoints and `params.yaml`. Each checkpoint is evaluated as
`python -m polynet_tf.evaluate --checkpoint PREFIX --data_pattern ...` would
(same model loading, protocol, data and report), and its results go
through `tf.io.gfile`, so the run may be any URI:

- `MODEL_DIR/continuous_eval/ckpt-<step>.json`: the report of each checkpoint;
- `MODEL_DIR/eval/`: TensorBoard scalars `top1`, `top5` at each step;
- `MODEL_DIR/continuous_eval/record.json`: the checkpoints evaluated and the
  best by top-1, rewritten atomically after each one. A restarted evaluator
  reads it and skips the checkpoints it names.

It stops after the checkpoint of the last training step, or when no new
checkpoint came for `timeout` seconds. A checkpoint the trainer deleted
(`trainer.max_checkpoints`) before it was read is skipped; while one is
evaluated the trainer may write several, of which the latest is taken next.
"""

import dataclasses
import re
from typing import Callable, Dict, Optional

import tensorflow as tf
from absl import logging

from polynet_tf import fileio, runs
from polynet_tf.evaluation import data, evaluator
from polynet_tf.evaluation.model_sources import ModelSpec, load_scorer

RECORD_FILE = "record.json"


@dataclasses.dataclass
class DataSource:
    """The evaluation data: TFRecord files, or a TFDS split.

    Attributes:
      file_pattern: glob(s) of TFRecord shards, comma-separated.
      tfds_name: TFDS dataset instead (with `tfds_split`, `tfds_data_dir`).
      tfds_split: TFDS split.
      tfds_data_dir: TFDS data directory.
      tfds_manual_dir: the folder a TFDS dataset is prepared from, if it is
        not prepared yet (ImageNet's tar files).
    """

    file_pattern: str = ""
    tfds_name: str = ""
    tfds_split: str = "validation"
    tfds_data_dir: str = ""
    tfds_manual_dir: str = ""

    @classmethod
    def from_data_config(cls, config) -> "DataSource":
        """The evaluation data a run's `eval_data` section (a `DataConfig`) names."""
        return cls(config.file_pattern, config.tfds_name, config.tfds_split,
                   config.tfds_data_dir, config.tfds_manual_dir)

    def records(self) -> data.EvaluationRecords:
        """The records, read afresh (a new dataset for each checkpoint)."""
        if self.tfds_name:
            return data.tfds_records(self.tfds_name, self.tfds_split, self.tfds_data_dir,
                                     self.tfds_manual_dir)
        return data.tfrecord_records(self.file_pattern)


def checkpoint_step(prefix: str) -> int:
    """The training step of a checkpoint prefix (`.../ckpt-600` -> 600; the trainer numbers
    its checkpoints by step)."""
    found = re.search(r"-(\d+)$", prefix)
    if not found:
        raise ValueError(f"Checkpoint {prefix!r} is not numbered by step (ckpt-<step>).")
    return int(found.group(1))


def evaluate_checkpoint(prefix: str, source: DataSource, strategy=None, batch_size: int = 0,
                        progress: bool = False) -> Dict:
    """The report of one checkpoint, as `python -m polynet_tf.evaluate --checkpoint` writes.

    Args:
      prefix: the checkpoint prefix; its run's `params.yaml` gives the model
        and its input contract (the protocol: the run's eval preprocessing).
      source: the evaluation data.
      strategy: a `tf.distribute.Strategy`; None: the default one.
      batch_size: images per step (0: the evaluate command's default).
      progress: show a progress bar.

    Returns:
      The report (see `Evaluator.evaluate`), with `data`, `checkpoint` and `step`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        scorer = load_scorer(ModelSpec("checkpoint", prefix))
    protocol = scorer.contract.crop_protocol()
    records = source.records()
    batch_size = batch_size or evaluator.default_batch_size(strategy, protocol)
    runner = evaluator.Evaluator([scorer], protocol, strategy=strategy)
    report = runner.evaluate(data.crops_dataset(records.dataset, protocol, batch_size),
                             records.num_images, records.class_names, progress=progress)
    report["data"] = {"source": records.description, "batch_size": batch_size}
    report.update(checkpoint=prefix, step=checkpoint_step(prefix))
    return report


def export_checkpoint(entry: Dict, destination: str) -> Optional[str]:
    """Exports a record entry's checkpoint with `python -m polynet_tf.export`.

    Args:
      entry: a record entry (`checkpoint`, `step`).
      destination: `OUTPUT_BASE/MODEL_NAME`; the version is the step.

    Returns:
      The SavedModel's folder, or None when the export failed (logged; the
      evaluation goes on).
    """
    from polynet_tf import export  # noqa: PLC0415  (the command: loads serving code)

    status = export.main(["--checkpoint", entry["checkpoint"], "--output_base",
                          fileio.dirname(destination), "--model_name",
                          fileio.basename(destination), "--version", str(entry["step"]),
                          "--overwrite"])
    if status:
        logging.warning("continuous evaluation: the export of %s failed (status %d)",
                        entry["checkpoint"], status)
        return None
    return fileio.join(destination, str(entry["step"]))


def record_path(model_dir: str) -> str:
    """Where the evaluator keeps its record of a run."""
    return fileio.join(runs.continuous_eval_dir(model_dir), RECORD_FILE)


def read_record(model_dir: str) -> Dict:
    """The evaluator's record of a run: {"evaluated": {name: entry}, "best": entry or None}."""
    path = record_path(model_dir)
    if fileio.isfile(path):
        return fileio.read_json(path)
    return {"evaluated": {}, "best": None}


def run_train_steps(model_dir: str) -> Optional[int]:
    """The run's `trainer.train_steps` (its `params.yaml`), or None before it is written."""
    if not fileio.isfile(runs.params_path(model_dir)):
        return None
    return int(runs.read_params(model_dir)["trainer"]["train_steps"])


def evaluate_continuously(model_dir: str, source: DataSource,
                          train_steps: Optional[int] = None, timeout: float = 3600.0,
                          strategy=None, batch_size: int = 0,
                          on_new_best: Optional[Callable[[Dict], Optional[str]]] = None,
                          progress: bool = False) -> Dict:
    """Evaluates each new checkpoint of a run until the one of `train_steps`.

    Args:
      model_dir: the training run (any URI).
      source: the evaluation data.
      train_steps: the run's last step; None: `trainer.train_steps` of its
        `params.yaml` (which the chief writes before its first checkpoint),
        read again at each checkpoint.
      timeout: stop when no new checkpoint came for this many seconds.
      strategy: a `tf.distribute.Strategy` for the evaluation; None: default.
      batch_size: images per step (0: the evaluate command's default).
      on_new_best: called with the record entry of each checkpoint better
        (top-1) than all before, e.g. to export it; returns where it put it
        (recorded as the entry's `export`), or None.
      progress: show a progress bar per checkpoint.

    Returns:
      The record, with `finished` True when the last checkpoint was evaluated
      (False: the timeout ended the wait).
    """
    record = read_record(model_dir)
    folder = runs.continuous_eval_dir(model_dir)
    writer = None
    last_step = train_steps or run_train_steps(model_dir)
    finished = last_step is not None and any(
        e["step"] >= last_step for e in record["evaluated"].values())
    if finished:
        logging.info("continuous evaluation: the checkpoint of step %d was evaluated before "
                     "(%s)", last_step, record_path(model_dir))
    iterator = () if finished else tf.train.checkpoints_iterator(
        runs.checkpoints_dir(model_dir), timeout=timeout)
    for prefix in iterator:
        name, step = fileio.basename(prefix), checkpoint_step(prefix)
        if name not in record["evaluated"]:
            try:
                report = evaluate_checkpoint(prefix, source, strategy, batch_size, progress)
            except tf.errors.NotFoundError as error:
                logging.warning("continuous evaluation: %s is gone before it was read "
                                "(trainer.max_checkpoints?), skipped: %s", prefix, error)
                continue
            report_file = fileio.join(folder, f"{name}.json")
            fileio.write_json(report_file, report, sort_keys=False)
            writer = writer or tf.summary.create_file_writer(
                runs.summaries_dir(model_dir, "eval"))
            # top-5, or top-k with fewer classes (the trainer's "top5" tag too).
            top_k = next(v for k, v in report.items()
                         if re.fullmatch(r"top\d+_accuracy", k) and k != "top1_accuracy")
            with writer.as_default(step=step):
                tf.summary.scalar("top1", report["top1_accuracy"])
                tf.summary.scalar("top5", top_k)
            writer.flush()
            entry = {"checkpoint": prefix, "step": step, "report": report_file,
                     "num_images": report["num_images"],
                     "top1_accuracy": report["top1_accuracy"], "top5_accuracy": top_k}
            best = record["best"]
            if best is None or entry["top1_accuracy"] > best["top1_accuracy"]:
                entry["export"] = on_new_best(entry) if on_new_best else None
                record["best"] = entry
            record["evaluated"][name] = entry
            fileio.write_json(record_path(model_dir), record, sort_keys=False)
            logging.info("continuous evaluation: %s (step %d): top-1 %.4f, top-5 %s on %d "
                         "images; best so far %s", name, step, entry["top1_accuracy"],
                         entry["top5_accuracy"], entry["num_images"],
                         record["best"]["checkpoint"])
        if step >= (train_steps or run_train_steps(model_dir)):
            finished = True
            break
    if writer is not None:
        writer.close()
    return dict(record, finished=finished)
