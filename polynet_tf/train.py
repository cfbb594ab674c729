r"""Trains (and evaluates) a PolyNet: `python -m polynet_tf.train`.

One machine:
    python -m polynet_tf.train --config official_configs/tiny_cpu.yaml --model_dir /tmp/run
Several machines (the same command on each, with its own --task_index):
    python -m polynet_tf.train --config official_configs/very_deep_imagenet.yaml \
        --model_dir gs://bucket/run --worker_hosts=h1:2222,h2:2222 --task_index=0
A `TF_CONFIG` in the environment (Kubeflow's TFJob: a chief and workers,
...) takes precedence over the flags. A restarted job resumes from the latest
checkpoint in `--model_dir`. A side-car evaluator (`--mode continuous_eval`,
or TF_CONFIG's `evaluator` task) evaluates each new checkpoint of the run
once, until the last (polynet_tf.evaluation.continuous). Exit statuses: 0
done, 2 bad configuration, 3 a peer worker failed, was lost or met bad data,
4 diverged, 5 this worker met a bad record or label (data.on_error=fail), 143
preempted (SIGTERM to any worker: every worker saved the same step).
docs/failures.md has the details.
"""

import os
import sys

from absl import app, flags, logging

flags.DEFINE_multi_string("config", [], "YAML configuration file; repeatable, later files win.")
flags.DEFINE_string("params_override", "",
                    "Overrides, e.g. 'trainer.train_steps=100,model.num_classes=10'.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and params.yaml go here.")
flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval", "continuous_eval"],
                  "What to run; continuous_eval: evaluate each new checkpoint of the run "
                  "(beside training) until the one of trainer.train_steps.")
flags.DEFINE_float("eval_timeout_seconds", 3600, "continuous_eval: stop when no new checkpoint "
                   "came for this long.")
flags.DEFINE_string("export_best", None, "continuous_eval: export each checkpoint better than "
                    "the ones before to EXPORT_BEST/<step> (OUTPUT_BASE/MODEL_NAME of "
                    "python -m polynet_tf.export).")
flags.DEFINE_string("worker_hosts", "", "Comma-separated host:port of all workers.")
flags.DEFINE_integer("task_index", 0, "Index of this worker in --worker_hosts.")
flags.DEFINE_string("init_from", None,
                    "Checkpoint of a smaller trained network to grow this one from "
                    "(initialization by insertion); used when model_dir has no checkpoint.")
flags.DEFINE_string("init_from_architecture", None,
                    "Architecture of --init_from (preset or spec); default: same as the model.")
flags.DEFINE_enum("init_from_mode", "paper", ["paper", "function_preserving"],
                  "paper: new blocks freshly initialised (Glorot); function_preserving: new "
                  "paths start at zero output, so the grown net computes what the small one did.")

FLAGS = flags.FLAGS

EXIT_DIVERGED = 4
EXIT_CONFIG = 2


def main(argv):
    del argv
    if not FLAGS.model_dir:
        _fail("--model_dir is required.", EXIT_CONFIG)
    # The cluster must be configured and the strategy made before any other
    # TensorFlow op (docs/design.md section 4).
    from polynet_tf.training import cluster  # noqa: PLC0415

    try:
        num_workers, task = cluster.configure_cluster(FLAGS.worker_hosts, FLAGS.task_index)
    except cluster.EvaluatorTaskError:
        num_workers, task = 0, None  # TF_CONFIG's evaluator: the side-car evaluator
    except ValueError as error:
        _fail(str(error), EXIT_CONFIG)
    from polynet_tf import runs  # noqa: PLC0415
    from polynet_tf.configs import ConfigError, write_yaml  # noqa: PLC0415

    continuous = num_workers == 0 or FLAGS.mode == "continuous_eval"
    try:
        config = _load_config(runs, "eval" if continuous else FLAGS.mode)
    except (ConfigError, FileNotFoundError) as error:
        _fail(f"Invalid configuration: {error}", EXIT_CONFIG)
    # Before any TensorFlow op: the thread pools are made with the runtime.
    cluster.set_threads(config.runtime)
    import tensorflow as tf  # noqa: PLC0415

    if continuous:  # reads the run, writes only its eval/ and continuous_eval/
        _check_data_files(config, "eval", tf)
        _continuous_eval(config, tf)
        sys.exit(0)

    _check_data_files(config, FLAGS.mode, tf)
    checkpoint_dir = runs.checkpoints_dir(FLAGS.model_dir)
    if FLAGS.mode == "eval" and not tf.train.latest_checkpoint(checkpoint_dir):
        _fail(f"--mode=eval found no checkpoint in {checkpoint_dir}: evaluating the random "
              "initial weights would mean nothing. Point --model_dir at a training run "
              "(its checkpoints/ folder), or train first.", EXIT_CONFIG)
    strategy = cluster.make_strategy(config.runtime, num_workers)
    if config.runtime.deterministic_ops:
        # After the strategy: a multi-worker context must be configured first.
        tf.config.experimental.enable_op_determinism()
    from polynet_tf.training.finetune import FineTuneError  # noqa: PLC0415
    from polynet_tf.training.trainer import Trainer, TrainingDivergedError  # noqa: PLC0415

    chief = cluster.is_chief(strategy)
    _log_startup(config, strategy, num_workers, task, chief)
    try:
        # The Trainer checks the initial weights (init section, --init_from)
        # before it writes anything: a refused run leaves model_dir as it was.
        trainer = Trainer(config, FLAGS.model_dir, strategy, num_workers, FLAGS.init_from,
                          FLAGS.init_from_architecture, FLAGS.init_from_mode)
        if chief and FLAGS.mode != "eval":  # evaluation reads the run's params.yaml only
            write_yaml(config.to_dict(), runs.params_path(FLAGS.model_dir))
        if trainer.restored_from and chief:
            logging.info(_start_message(trainer))
        if FLAGS.mode == "eval":
            metrics = trainer.evaluate()
        else:
            metrics = trainer.train(evaluate_during_training=FLAGS.mode == "train_and_eval")
        if chief:
            logging.info("Finished at step %d: %s", trainer.step, metrics)
            print(f"final step {trainer.step}: " +
                  ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in metrics.items()), flush=True)
    except TrainingDivergedError as error:
        _fail(str(error), EXIT_DIVERGED, num_workers)
    except FineTuneError as error:  # init.weights that do not fit: before the first step
        _fail(f"Cannot fine-tune: {error}", EXIT_CONFIG, num_workers)
    except SystemExit as stop:  # preempted (143): every worker saved the same step
        _leave(stop.code, num_workers)
    except tf.errors.OpError as error:
        _fail_on_op_error(error, checkpoint_dir, cluster, num_workers)
    _leave(0, num_workers)


def _start_message(trainer):
    """What the run starts from: a resumed checkpoint, or the initial weights of a new run."""
    if trainer.resumed:
        return f"Resumed from {trainer.restored_from} at step {trainer.step}"
    return f"Initialized from {trainer.restored_from} (a new run, step {trainer.step})"


def _fail_on_op_error(error, checkpoint_dir, cluster, num_workers):
    """One line and an exit status for an error in a step: bad data here, or a peer.

    Raises:
        the error itself when it is neither (a bug: its traceback is wanted).
    """
    text = str(error)
    peer = cluster.peer_failure(text)
    if peer is None:
        bad_data = cluster.data_error(text)
        if bad_data:
            _fail(bad_data, cluster.EXIT_BAD_DATA, num_workers)
        if not isinstance(error, _peer_errors()):
            raise error
        peer = ("(unknown)", f"failed or could not be reached ({type(error).__name__}: "
                             f"{text.splitlines()[0][:300]})")
    _fail(f"peer worker {peer[0]} {peer[1]}. Restart every worker with the same command: "
          f"training resumes from the latest checkpoint in {checkpoint_dir}.",
          cluster.EXIT_PEER_FAILED, num_workers)


def _peer_errors():
    import tensorflow as tf  # noqa: PLC0415

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError)


def _continuous_eval(config, tf):
    """The side-car evaluator on FLAGS.model_dir (polynet_tf.evaluation.continuous)."""
    from polynet_tf.evaluation import continuous  # noqa: PLC0415

    source = continuous.DataSource.from_data_config(config.eval_data)
    # One process; several local GPUs share each checkpoint's images.
    strategy = (tf.distribute.MirroredStrategy()
                if len(tf.config.list_logical_devices("GPU")) > 1 else None)
    print(f"continuous evaluation of {FLAGS.model_dir} until the step of its params.yaml's "
          "trainer.train_steps", flush=True)
    record = continuous.evaluate_continuously(
        FLAGS.model_dir, source, None, FLAGS.eval_timeout_seconds, strategy,
        on_new_best=(lambda entry: continuous.export_checkpoint(entry, FLAGS.export_best))
        if FLAGS.export_best else None)
    best = record["best"]
    print(f"continuous evaluation: {len(record['evaluated'])} checkpoint(s) evaluated"
          + (f"; best {best['checkpoint']} (step {best['step']}): top-1 "
             f"{best['top1_accuracy']:.4f}" if best else "")
          + ("" if record["finished"] else f"; stopped: no new checkpoint for "
             f"{FLAGS.eval_timeout_seconds:.0f} s"), flush=True)


def _load_config(runs, mode):
    """The flags' configuration; for evaluation, the run's params.yaml under them."""
    from polynet_tf import fileio  # noqa: PLC0415
    from polynet_tf.configs import load_experiment, load_for_evaluation  # noqa: PLC0415

    params = runs.params_path(FLAGS.model_dir)
    if mode != "eval" or not fileio.isfile(params):
        return load_experiment(FLAGS.config, FLAGS.params_override, mode)
    config, ignored = load_for_evaluation(params, FLAGS.config, FLAGS.params_override)
    if ignored:
        who = "--mode=eval" if FLAGS.mode == "eval" else "The continuous evaluator"
        note = (f"{who} evaluates the network of {params} (the one its checkpoints "
                f"hold); not used from --config/--params_override: {'; '.join(ignored)}")
        logging.warning(note)
        print(f"note: {note}", file=sys.stderr, flush=True)
    return config


def _check_data_files(config, mode, tf):
    """Fails early, naming the pattern, when TFRecord shards are missing."""
    needed = {"train": ["train_data"], "eval": ["eval_data"],
              "train_and_eval": ["train_data", "eval_data"]}[mode]
    for name in needed:
        data = getattr(config, name)
        if data.tfds_name:
            continue
        for pattern in data.file_pattern.split(","):
            if not tf.io.gfile.glob(pattern.strip()):
                _fail(f"No files match {name}.file_pattern={pattern.strip()!r}. Build shards "
                      "with `python -m polynet_tf.data.build_tfrecords` or fix the pattern.",
                      EXIT_CONFIG)


def _log_startup(config, strategy, num_workers, task, chief):
    if not chief:
        return
    import yaml  # noqa: PLC0415

    replicas = strategy.num_replicas_in_sync
    batch = config.train_data.global_batch_size
    logging.info(
        "polynet_tf.train: %s, %d worker(s) (this is task %d), %d replica(s) in sync, "
        "global batch %d (%s per replica), model %s at %dx%d",
        type(strategy).__name__, num_workers, task, replicas, batch,
        batch / replicas, config.model.architecture, config.train_data.image_size,
        config.train_data.image_size)
    logging.info("configuration:\n%s", yaml.safe_dump(config.to_dict(), sort_keys=False))


def _fail(message, code, num_workers=1):
    logging.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    _leave(code, num_workers)


def _leave(code, num_workers):
    """Exits; with several workers at once, without waiting on the coordination service.

    At interpreter exit TensorFlow's coordination agent waits for the other
    workers' heartbeats to stop (10-20 s): everything this process had to do
    is done (a finished or preempted job passed a barrier of all workers),
    so it leaves with `os._exit` after flushing its output.
    """
    if num_workers <= 1:
        sys.exit(code)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run():
    from polynet_tf import cli  # noqa: PLC0415  (--help exits 0, flag errors exit 2)

    app.run(main, flags_parser=cli.absl_flags_parser)


if __name__ == "__main__":
    run()
