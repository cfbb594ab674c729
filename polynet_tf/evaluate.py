r"""Evaluates PolyNets under single-crop or multi-crop protocols: `python -m polynet_tf.evaluate`.

The released weights under their published protocol, the default for them
(`squash`: the whole image squashed to 378x378, centre 331; `--protocol
shorter_side` keeps the aspect ratio, `pytorchcv` resizes the shorter side to 379):
    python -m polynet_tf.evaluate --weights imagenet --architecture very_deep \
        --data_pattern "val/validation-*" --label_offset 1
A training run, the paper's multi-crop (8 scales x 36 crops, top-30% pooling):
    python -m polynet_tf.evaluate --checkpoint runs/a --protocol polynet_multicrop \
        --data_pattern "val/validation-*"
An ensemble (weights are normalised to sum to 1):
    python -m polynet_tf.evaluate --model checkpoint=runs/a,weight=0.6 \
        --model saved_model=export/resnet/1,weight=0.4 --protocol googlenet144 --image_size 331 ...

Several tasks (machines) share one evaluation: the same command on each,
with `--worker_hosts` (every task's host:port) and its own `--task_index`, or
a TF_CONFIG (a TFJob's chief and workers):
    python -m polynet_tf.evaluate --checkpoint gs://b/run --protocol polynet_multicrop \
        --data_pattern "gs://b/val/validation-*" --output gs://b/run/evaluation_multicrop.json \
        --worker_hosts=h0:2222,h1:2222,h2:2222 --task_index=1
The TFRecord files are dealt out to the tasks; each writes every file's counts
to OUTPUT's `.shards` folder (`x.json` -> `x.shards/`), and task 0 waits for
them all and writes the report, the same one a single process writes. A
task run again with the same command skips the files already scored
(`--resumable` does the same for one process).

Writes the report (top-1/top-5 accuracy and error, per-class accuracy, number
of images, protocol, models) as JSON to `--output` and prints a summary.
Every path (models, data, `--output`, figures) may be a URI such as
`gs://bucket/run`: files are read and written through `tf.io.gfile`.
Exit status: 0 done, 2 bad arguments or inputs, 3 another task of a split
evaluation failed or was lost (rerun it, then this one: scored files are kept).
"""

import re

from absl import flags

from polynet_tf import cli
from polynet_tf.data import protocols

_PROG = "python -m polynet_tf.evaluate"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_multi_string(
    "model", [], "A model, repeatable for an ensemble: comma-separated key=value with exactly "
    "one of weights=FILE|imagenet, checkpoint=DIR, saved_model=DIR, and optional "
    "architecture=, config=, classes=, width_multiplier=, weight= (ensemble weight, "
    "default 1).", flag_values=FLAGS)
flags.DEFINE_string("weights", None, "Weights file (.weights.h5) or 'imagenet'; with "
                    "--architecture or --config.", flag_values=FLAGS)
flags.DEFINE_string("checkpoint", None, "Training model_dir, its checkpoints/ folder or a "
                    "checkpoint prefix; configuration from --config or params.yaml.",
                    flag_values=FLAGS)
flags.DEFINE_enum("weights_kind", "auto", ["auto", "ema", "raw"], "With --checkpoint: 'auto' "
                  "evaluates the EMA of the weights when the run kept one "
                  "(trainer.ema_decay), 'raw' the trained weights.", flag_values=FLAGS)
flags.DEFINE_string("saved_model", None, "SavedModel directory with a 'serve_images' signature.",
                    flag_values=FLAGS)
flags.DEFINE_string("architecture", None, "Architecture preset or spec for --weights.",
                    flag_values=FLAGS)
flags.DEFINE_string("config", None, "Experiment YAML: the model and its normalisation.",
                    flag_values=FLAGS)
flags.DEFINE_integer("classes", None, "Number of classes for --weights with --architecture "
                     "(default 1000).", flag_values=FLAGS)
flags.DEFINE_string("data_pattern", None, "Glob(s) of TFRecord shards, comma-separated.",
                    flag_values=FLAGS)
flags.DEFINE_integer("label_offset", None, "Subtracted from stored labels (default: the "
                     "class_index.json beside the shards, else 0; TF's ImageNet shards: 1).",
                     flag_values=FLAGS)
flags.DEFINE_string("tfds_name", None, "TFDS dataset instead of TFRecords, e.g. imagenet2012.",
                    flag_values=FLAGS)
flags.DEFINE_string("tfds_split", "validation", "TFDS split.", flag_values=FLAGS)
flags.DEFINE_string("tfds_data_dir", "", "TFDS data directory.", flag_values=FLAGS)
flags.DEFINE_string("tfds_manual_dir", "", "Prepare the TFDS dataset from the files here.",
                    flag_values=FLAGS)
flags.DEFINE_enum("protocol", None,
                  list(protocols.PROTOCOL_NAMES) + list(protocols.PROTOCOL_ALIASES),
                  "Crop protocol (default: the model's input contract, e.g. 'squash' for "
                  "--weights imagenet, a SavedModel's recorded one; 'single' for an ensemble).",
                  flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Crop side, the model's input size (default: the "
                     "model's, else the protocol's: 331, 224 for googlenet144).", flag_values=FLAGS)
flags.DEFINE_alias("crop_size", "image_size", flag_values=FLAGS)  # deprecated
flags.DEFINE_float("crop_fraction", None, "single: fraction of the shorter side kept "
                   "(default 0.875).", flag_values=FLAGS)
flags.DEFINE_list("scales", None, "Resized shorter side (or squash side) of each scale.",
                  flag_values=FLAGS)
flags.DEFINE_float("topk_fraction", None, "polynet_multicrop: fraction of crops per scale "
                   "averaged per class (default 0.3).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 0, "Images per step over all replicas; 0: enough for "
                     "about 32 crops per replica.", flag_values=FLAGS)
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images.", flag_values=FLAGS)
flags.DEFINE_string("output", "evaluation.json", "Where the JSON report goes.", flag_values=FLAGS)
flags.DEFINE_string("save_crops_figure", None, "PNG drawing the crop boxes of one image.",
                    flag_values=FLAGS)
flags.DEFINE_string("figure_image", None, "Image file for --save_crops_figure (default: the "
                    "first image of the data).", flag_values=FLAGS)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"],
                  "mirrored: all local GPUs (or --num_cpu_devices CPU replicas).",
                  flag_values=FLAGS)
flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many logical devices "
                     "(tries the multi-device path without GPUs).", flag_values=FLAGS)
flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=FLAGS)
flags.DEFINE_string("worker_hosts", "", "Comma-separated host:port of every task of a split "
                    "evaluation (TF_CONFIG wins when set); the tasks share files only.",
                    flag_values=FLAGS)
flags.DEFINE_integer("task_index", 0, "This task's index in --worker_hosts; task 0 writes the "
                     "report.", flag_values=FLAGS)
flags.DEFINE_bool("resumable", False, "One process: score file by file into OUTPUT's .shards "
                  "folder, so that a rerun skips the files already scored (always on with "
                  "several tasks).", flag_values=FLAGS)
flags.DEFINE_float("task_timeout_seconds", 600, "Task 0 gives up on a task whose heartbeat "
                   "(rewritten every 10 s while it works) stands still this long.",
                   lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum("crops_per_scale", None, ["18", "36"], "googlenet144, polynet_multicrop: "
                  "crops per scale: 36 (GoogLeNet's 18 boxes and their mirror images, the "
                  "default) or 18 (the boxes only).", flag_values=FLAGS)

EXIT_USAGE = 2
EXIT_TASK_FAILED = 3


UsageError = cli.UsageError  # Bad arguments or inputs: reported without a traceback.


def model_specs_from_flags(flag_values):
    """The `ModelSpec`s named by --model and the single-model flags.

    Args:
      flag_values: parsed flags.

    Returns:
      A list of `ModelSpec`.

    Raises:
      UsageError: if no model or conflicting model flags are given.
    """
    from polynet_tf.evaluation.model_sources import ModelSpec, parse_model_spec  # noqa

    specs = [parse_model_spec(text) for text in flag_values.model]
    single = [(kind, getattr(flag_values, kind)) for kind in ("weights", "checkpoint",
                                                              "saved_model")
              if getattr(flag_values, kind)]
    if len(single) > 1:
        raise UsageError("Give one of --weights, --checkpoint, --saved_model (or repeat "
                         "--model for an ensemble).")
    if single:
        kind, path = single[0]
        specs.append(ModelSpec(kind, path, architecture=flag_values.architecture,
                               config=flag_values.config, classes=flag_values.classes,
                               weights_kind=flag_values.weights_kind))
    if not specs:
        raise UsageError("No model: give --weights, --checkpoint, --saved_model or --model.")
    return specs


# Options of some protocols only: (flag, protocols it applies to).
_MULTICROP = ("googlenet144", "polynet_multicrop")
_RESIZING = ("squash", "shorter_side", "pytorchcv")
_PROTOCOL_OPTIONS = (
    ("crop_fraction", ("single",)),
    ("scales", _RESIZING + _MULTICROP),
    ("topk_fraction", ("polynet_multicrop",)),
    ("crops_per_scale", _MULTICROP),
)


def protocol_from_flags(flag_values, contract=None):
    """The `CropProtocol` of --protocol and its options.

    Args:
      flag_values: parsed flags.
      contract: the model's `InputContract` (a single model's); the default
        protocol and sizes when --protocol (or an option) leaves them out.

    Raises:
      UsageError: an option that does not apply to the protocol, or a bad value.
    """
    from polynet_tf.data.input_contract import resolve_input_contract  # noqa: PLC0415
    from polynet_tf.evaluation import get_protocol  # noqa: PLC0415

    if flag_values.protocol:
        protocol = protocols.canonical_name(flag_values.protocol)
    else:
        protocol = contract.protocol if contract else "single"
    for name, allowed in _PROTOCOL_OPTIONS:
        if flag_values[name].value is not None and protocol not in allowed:
            raise UsageError(f"--{name} applies to --protocol {' or '.join(allowed)} only; "
                             f"--protocol {protocol} does not use it (leave it out).")
    overrides = {"crop_size": flag_values.image_size,
                 "topk_fraction": flag_values.topk_fraction}
    if flag_values.scales:
        try:
            overrides["scales"] = tuple(int(s) for s in flag_values.scales)
        except ValueError:
            raise UsageError(f"--scales must be integers; received {flag_values.scales}.")
        if protocol in _RESIZING and len(overrides["scales"]) != 1:
            raise UsageError(f"--protocol {protocol} takes one scale (the resized side); "
                             f"received --scales {','.join(flag_values.scales)}.")
    if flag_values.crop_fraction is not None:
        overrides["crop_fraction"] = flag_values.crop_fraction
    if flag_values.crops_per_scale is not None:
        overrides["mirror"] = flag_values.crops_per_scale == "36"
    if contract is not None and protocol in protocols.SINGLE_CROP_PROTOCOLS:
        # The model's contract, with the flags given over it.
        scales = overrides.get("scales")
        return resolve_input_contract(
            default=contract, protocol=protocol, image_size=flag_values.image_size,
            crop_fraction=overrides.get("crop_fraction"),
            resize_size=scales[0] if scales else None).crop_protocol()
    return get_protocol(protocol, **overrides)


def _make_strategy(tf, flag_values):
    if flag_values.num_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * flag_values.num_cpu_devices)
    if flag_values.strategy == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def run(flag_values):
    """Loads models and data, evaluates, writes the report; returns it."""
    import tensorflow as tf  # noqa: PLC0415

    strategy = _make_strategy(tf, flag_values)  # Before any other op (logical devices).
    from polynet_tf.evaluation import data, distributed, evaluator, metrics  # noqa: PLC0415
    from polynet_tf.evaluation.model_sources import load_scorer  # noqa: PLC0415

    protocol_from_flags(flag_values)  # Usage errors before any model is loaded.
    num_tasks, index = distributed.task_layout(flag_values.worker_hosts, flag_values.task_index)
    started = 0
    if num_tasks > 1 or flag_values.resumable:
        started = distributed.announce_start(distributed.work_dir(flag_values.output), index)
    specs = model_specs_from_flags(flag_values)
    if bool(flag_values.data_pattern) == bool(flag_values.tfds_name):
        raise UsageError("Give exactly one data source: --data_pattern (TFRecord shards) or "
                         "--tfds_name.")
    if flag_values.data_pattern:
        # Split: no pass over every record to count them (for the progress bar).
        records = data.tfrecord_records(flag_values.data_pattern, flag_values.label_offset,
                                        count=num_tasks == 1 and not flag_values.resumable)
    else:
        records = data.tfds_records(flag_values.tfds_name, flag_values.tfds_split,
                                    flag_values.tfds_data_dir, flag_values.tfds_manual_dir)
    dataset, num_images = records.dataset, records.num_images
    if flag_values.max_images:
        dataset = dataset.take(flag_values.max_images)
        num_images = min(num_images or flag_values.max_images, flag_values.max_images)
    with strategy.scope():
        scorers = [load_scorer(spec) for spec in specs]
    # One model: its input contract is the default (the preset's published protocol).
    protocol = protocol_from_flags(flag_values, scorers[0].contract if len(scorers) == 1
                                   else None)
    if flag_values.save_crops_figure and index == 0:
        _save_figure(tf, records.dataset, protocol, flag_values)
    batch_size = flag_values.batch_size or evaluator.default_batch_size(strategy, protocol)
    runner = evaluator.Evaluator(scorers, protocol, [s.weight for s in specs], strategy)
    if num_tasks > 1 or flag_values.resumable:
        report = _evaluate_split(runner, records, batch_size, num_tasks, index, flag_values,
                                 started)
        if report is None:
            return None
    else:
        report = runner.evaluate(data.crops_dataset(dataset, protocol, batch_size), num_images,
                                 records.class_names, progress=flag_values.progress)
    report["data"] = {"source": records.description, "batch_size": batch_size}
    metrics.write_json_atomically(report, flag_values.output)
    print(metrics.summary_text(report))
    print(f"Report: {flag_values.output}")
    return report


def _evaluate_split(runner, records, batch_size, num_tasks, index, flag_values, started):
    """This task's files, then (task 0) everyone's counts merged; None on other tasks.

    `started`: when this task announced its start (`distributed.announce_start`).
    """
    import time  # noqa: PLC0415

    from polynet_tf.evaluation import data, distributed  # noqa: PLC0415

    if records.files is None or flag_values.max_images:
        raise UsageError("A split or resumable evaluation takes --data_pattern (TFRecord "
                         "files, dealt out to the tasks) and no --max_images.")
    start = time.perf_counter()

    def score_file(file):
        part = data.tfrecord_records(file, records.label_offset, count=False)
        return runner.count(data.crops_dataset(part.dataset, runner.protocol, batch_size),
                            progress=flag_values.progress)

    identity = {"models": runner.describe_models(), "protocol": runner.protocol.to_dict(),
                "label_offset": records.label_offset}
    split = distributed.ShardedEvaluation(
        records.files, score_file, identity, distributed.work_dir(flag_values.output),
        num_tasks, index, flag_values.task_timeout_seconds, started)
    done = split.score_own_files()
    print(f"task {index} of {num_tasks}: scored {done['scored']} file(s), skipped "
          f"{done['skipped']} scored before ({split.folder})", flush=True)
    if index != 0:
        return None
    counter = split.merge(runner.num_classes, runner.top_k)
    report = runner.report(counter, records.class_names, time.perf_counter() - start)
    report["tasks"] = num_tasks
    return report


def _save_figure(tf, records, protocol, flag_values):
    from polynet_tf import fileio  # noqa: PLC0415
    from polynet_tf.evaluation.figure import save_crops_figure  # noqa: PLC0415

    if flag_values.figure_image:
        if not fileio.isfile(flag_values.figure_image):
            raise FileNotFoundError(f"--figure_image {flag_values.figure_image!r} does not exist.")
        encoded = fileio.read_bytes(flag_values.figure_image)
    else:
        encoded = next(iter(records.take(1)))[0].numpy()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    save_crops_figure(image, protocol, flag_values.save_crops_figure)
    print(f"Crop boxes drawn in {flag_values.save_crops_figure}")


def _run_command(flag_values):
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf.evaluation.distributed import TaskFailedError  # noqa: PLC0415

    try:
        run(flag_values)
    except TaskFailedError as error:
        return cli.fail(_PROG, str(error), status=EXIT_TASK_FAILED)
    except (FileNotFoundError, ImportError) as error:
        return cli.fail(_PROG, str(error))
    except tf.errors.OpError as error:
        # Typically an undecodable image or a truncated shard; no report is written.
        message = re.sub(r"\{\{.*?\}\}\s*", "", error.message.strip()).splitlines()[0]
        return cli.fail(_PROG, f"evaluation stopped: {message} (a corrupt "
                        "image or TFRecord file? check the data with polynet_tf.data's "
                        "on_error='fail' pipeline, which names the file and record)")
    return 0


def main(argv=None):
    """Command-line entry point; returns the exit status (0 done, 2 bad arguments or inputs)."""
    return cli.run(_PROG, __doc__, FLAGS, _run_command, argv)


if __name__ == "__main__":
    cli.app_run(main)
