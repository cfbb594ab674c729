"""The custom training loop (Keras 3 `fit` fails under MultiWorkerMirroredStrategy).

`strategy.run` inside `tf.function`, `distribute_datasets_from_function` over
the data package's sharded pipeline, `tf.nn.compute_average_loss`, a
`tf.train.CheckpointManager` written by the chief (other workers write to a
temporary directory, as tf.distribute requires every worker to save), and
each step run through TensorFlow's preemption handler (`preemption`: a
SIGTERM on any worker makes every worker save the same step, one step
later, and exit with `cluster.EXIT_PREEMPTED`). A
restarted job resumes from the latest checkpoint and the same data stream:
the input pipeline is a pure function of (seed, step) and skips what was
consumed. Every file goes through `tf.io.gfile`: `model_dir` may be a URI
(`gs://...`).

Optional: an EMA of the weights (`trainer.ema_decay`, `polynet_tf.training.ema`),
checkpointed and swapped in for evaluation; gradient accumulation
(`trainer.accumulation_steps`): one update, and one all-reduce, per
`accumulation_steps` micro-batches, all inside one call of the preemption
handler (docs/training.md).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from polynet_tf import fileio, runs
from polynet_tf.data import PipelineStats, build_dataset
from polynet_tf.layers.batch_norm import training_batch_norm_kernel
from polynet_tf.models import polyinception_modules, set_path_drop_rates
from polynet_tf.models.factory import build_model
from polynet_tf.training import cluster, finetune
from polynet_tf.training.batch_norm_sync import MovingStatisticsSync
from polynet_tf.training.ema import WeightAverage
from polynet_tf.training.evaluation_loop import (
    DistributedEvaluator,
    batch_totals,
    input_options,
    metrics_from_totals,
    with_model_classes,
)
from polynet_tf.training.fused_batch_norm import training_kernel
from polynet_tf.training.optimization import (
    build_optimizer,
    classification_loss,
    sum_over_replicas,
)
from polynet_tf.training.preemption import Preempted, PreemptionHandler
from polynet_tf.training.reporting import Reporter

CHECKPOINT_SUBDIR = runs.CHECKPOINTS_SUBDIR  # The run layout is polynet_tf.runs.


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Trains and evaluates one experiment in `model_dir`.

    Args:
        config: a validated `ExperimentConfig`.
        model_dir: checkpoints, summaries and `params.yaml` go here.
        strategy: from `cluster.make_strategy`.
        num_workers: number of worker processes.
        init_from: optional checkpoint of a smaller trained network to grow
            this one from (initialization by insertion); used only when
            `model_dir` has no checkpoint yet.
        init_from_architecture: the architecture of `init_from` (default:
            the model's own).
        init_from_mode: "paper" (new blocks Glorot-initialised) or
            "function_preserving" (new paths start at zero output).
    """

    def __init__(self, config, model_dir, strategy, num_workers=1, init_from=None,
                 init_from_architecture=None, init_from_mode="paper"):
        self.config = config
        self.model_dir = model_dir
        self.strategy = strategy
        self.num_workers = num_workers
        self.init_from_mode = init_from_mode
        self.is_chief = cluster.is_chief(strategy)
        self.task_id = cluster.task_id(strategy)
        self.global_batch_size = config.train_data.global_batch_size
        # Gradient accumulation: one update per `accumulation_steps` micro-batches.
        self.accumulation_steps = config.trainer.accumulation_steps
        self.update_batch_size = self.global_batch_size * self.accumulation_steps
        # Always set: a policy left by an earlier Trainer in this process must
        # not leak into a float32 run.
        keras.mixed_precision.set_global_policy(config.trainer.mixed_precision or "float32")
        # Same initial weights on every run (and every worker) of a config.
        keras.utils.set_random_seed(config.runtime.seed)
        with strategy.scope():
            self.model = build_model(config.model, image_size=config.train_data.image_size)
            # Fine-tuning: frozen parts leave trainable_variables before the optimizer.
            finetune.prepare_model(self.model, config.init)
            self.optimizer, self.schedule = build_optimizer(
                config.optimizer, config.schedule, self.update_batch_size,
                config.trainer.mixed_precision)
            self.optimizer.build(self.model.trainable_variables)
            self.head_optimizer = finetune.build_head_optimizer(
                self.model, config, self.update_batch_size)
            self.global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.drop_path_switched_on = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="drop_path_switched_on",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            # Loss, top-1, top-5 and image counts of a loop, per replica.
            self._loop_totals = tf.Variable(
                tf.zeros([4]), trainable=False, name="loop_totals",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM)
            self._accumulators = _accumulators(self.model.trainable_variables,
                                               self.accumulation_steps)
        self._ema = (WeightAverage(self.model.trainable_variables, config.trainer.ema_decay,
                                   strategy) if config.trainer.ema_decay else None)
        self._kernels = [v for v in self.model.trainable_variables if v.path.endswith("kernel")]
        self._batch_norm_kernel = training_kernel(config.trainer.batch_norm_kernel)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.global_step,
            drop_path_switched_on=self.drop_path_switched_on)
        if self.head_optimizer is not None:
            self.checkpoint.head_optimizer = self.head_optimizer
        self.checkpoint_dir = fileio.join(model_dir, CHECKPOINT_SUBDIR)
        # tf.distribute needs every worker to save; only the chief's copy is
        # kept. A worker's copy is deleted after each save, and here too: a
        # copy left by a killed run must never be mistaken for a checkpoint.
        self._write_dir = (self.checkpoint_dir if self.is_chief else
                           fileio.join(model_dir, ".worker_tmp", f"worker_{self.task_id}"))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._write_dir, max_to_keep=config.trainer.max_checkpoints)
        self._sync_batch_norm = MovingStatisticsSync(strategy, self.model)
        self._evaluator = DistributedEvaluator(
            strategy, self.model, with_model_classes(config.eval_data, config.model.num_classes),
            num_workers, config.trainer.eval_steps)
        # Every check of the initial weights comes before the first write to model_dir.
        self.restored_from, self.resumed = self._restore(init_from, init_from_architecture)
        if self._ema is not None and not hasattr(self.checkpoint, "ema"):
            self._ema.reset()  # the average starts at the initial (loaded or restored) weights
            self.checkpoint.ema = self._ema.trackable
        if self.is_chief:
            tf.io.gfile.makedirs(model_dir)
        else:
            _remove_tree(self._write_dir)
        self._train_function = None
        self._preemption = None  # made by train(): it installs a SIGTERM handler

    # ----------------------------------------------------------------- state
    @property
    def step(self):
        return int(self.global_step.numpy())

    def _restore(self, init_from, init_from_architecture):
        """Loads the latest checkpoint, or the initial weights; writes only after checks.

        Returns:
            (what the weights came from or None, whether it is a resumed checkpoint).
        """
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            if self._ema is not None:
                if runs.has_averages(latest):
                    self.checkpoint.ema = self._ema.trackable
                else:
                    logging.warning("%s holds no EMA of the weights (trainer.ema_decay was 0): "
                                    "the averages start at its weights", latest)
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if int(self.drop_path_switched_on.numpy()):
                set_path_drop_rates(self.model, self.config.trainer.adaptive_drop_path.max_rate)
            return latest, True
        if self.config.init.weights:
            finetune.initialize_model(self.model, self.config,
                                      self.model_dir if self.is_chief else None,
                                      self.strategy, init_from)
            return self.config.init.weights, False
        if init_from:
            from polynet_tf.grow import initialize_from_checkpoint  # noqa: PLC0415

            model = self.config.model
            report = initialize_from_checkpoint(
                self.model, init_from, init_from_architecture or model.architecture,
                mode=self.init_from_mode, width_multiplier=model.width_multiplier,
                classes=model.num_classes, bn_epsilon=model.bn_epsilon,
                bn_momentum=model.bn_momentum)
            if self.is_chief:  # written once the source was checked and copied
                tf.io.gfile.makedirs(self.model_dir)
                report.save(fileio.join(self.model_dir, "init_from"))
            return init_from, False
        return None, False

    def save(self):
        """Saves a checkpoint on every worker; only the chief's is kept.

        Raises:
            TrainingDivergedError: a weight or optimizer slot is NaN or
                infinite (a step's loss is computed before its update, so a
                finite loss does not prove the updated state is finite).
        """
        if not bool(self._state_is_finite()):
            raise TrainingDivergedError(self._divergence_message("finite, but the updated "
                                                                 "weights are not"))
        # The checkpoint holds the mean of the replicas' moving statistics.
        self._sync_batch_norm()
        path = self.manager.save(checkpoint_number=self.step)
        if not self.is_chief:
            _remove_tree(self._write_dir)
        return path

    @tf.function
    def _state_is_finite(self):
        checks = [tf.reduce_all(tf.math.is_finite(v)) for v in
                  list(self.model.trainable_variables) + list(self.optimizer.variables)
                  if "float" in str(v.dtype)]
        return tf.reduce_all(tf.stack(checks))

    # ------------------------------------------------------------- functions
    def _loss(self, labels, logits):
        loss, per_example = classification_loss(
            labels, logits, self.config.model.num_classes, self.config.optimizer.label_smoothing,
            self.global_batch_size)
        decay = self.config.optimizer.weight_decay
        if decay:
            l2 = tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in self._kernels])
            loss += tf.nn.scale_regularization_loss(decay * l2)
        return loss, per_example

    def _train_step(self, images, labels):
        """One micro-batch: its gradients, then the update (or, accumulating, their sum)."""
        # Entered in the thread tracing this replica's step; the gradient is
        # inside, for rematerialized parts recomputed there.
        with training_batch_norm_kernel(self._batch_norm_kernel):
            gradients, totals = self._gradients(images, labels)
        if self._accumulators is None:
            self._apply(gradients)
        else:
            # This replica's own sum: no collective until the update.
            for accumulator, gradient in zip(self._accumulators, gradients):
                if gradient is not None:
                    accumulator.assign_add(gradient)
        return totals

    def _gradients(self, images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            loss, per_example = self._loss(labels, logits)
            # Under loss scaling the gradients stay scaled (and so does an
            # accumulated sum): the scale only changes at an update.
            scaled = (self.optimizer.scale_loss(loss)
                      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        self._no_gradient = [g is None for g in gradients]  # the same at every trace
        return gradients, batch_totals(labels, logits, tf.reduce_sum(per_example))

    def _apply(self, gradients):
        variables = self.model.trainable_variables
        # One all-reduce per update, before any decision on the gradients:
        # every replica skips or applies a mixed_float16 step alike.
        gradients = sum_over_replicas(gradients, self.optimizer,
                                      self.config.optimizer.clip_global_norm)
        finetune.apply_gradients(self.optimizer, self.head_optimizer, gradients, variables)
        self.global_step.assign_add(1)

    def _apply_accumulated(self):
        """The update of `accumulation_steps` micro-batches: their mean gradient.

        Each micro-batch's loss is a mean over its own global batch, so the
        mean of the k gradients is the gradient of the mean over all k
        micro-batches (the k-times batch); clipping and the loss-scale check
        then see that gradient, as in one step on the large batch.
        """
        k = float(self.accumulation_steps)
        gradients = [None if missing else accumulator.read_value() / k
                     for accumulator, missing in zip(self._accumulators, self._no_gradient)]
        self._apply(gradients)
        for accumulator in self._accumulators:
            accumulator.assign(tf.zeros_like(accumulator))

    def _make_train_function(self):
        strategy = self.strategy

        totals = self._loop_totals

        def step(images, labels):
            totals.assign_add(self._train_step(images, labels))

        @tf.function
        def reset_totals():
            strategy.run(lambda: totals.assign(tf.zeros([4])))

        accumulation_steps = self.accumulation_steps

        # One update per call: the preemption handler agrees on calls, so a
        # checkpoint is always at an update boundary (the accumulators are
        # then zero and are not saved). No collective besides the update's
        # own: a reduction of the metrics here could be ordered differently
        # on different replicas than the gradient (and synchronized
        # BatchNorm) all-reduces, a deadlock.
        @tf.function
        def run_step(iterator):
            if accumulation_steps == 1:
                strategy.run(step, args=next(iterator))
            else:
                for _ in tf.range(accumulation_steps):  # traced once, not k times
                    strategy.run(step, args=next(iterator))
                strategy.run(self._apply_accumulated)
            if self._ema is not None:
                self._ema.update(self.global_step - 1)

        def train_steps(iterator, num_steps):
            reset_totals()
            for _ in range(int(num_steps)):
                if self._preemption is None:  # called outside `train` (tests)
                    run_step(iterator)
                else:
                    self._preemption.run(run_step, iterator)
            return totals.read_value()  # summed over replicas and workers

        return train_steps

    def _train_dataset(self, skip_steps, stats):
        data = with_model_classes(self.config.train_data, self.config.model.num_classes)

        def dataset_fn(context):
            logging.info("task %d: training input pipeline %d of %d, %d replica(s) in sync",
                         self.task_id, context.input_pipeline_id, context.num_input_pipelines,
                         context.num_replicas_in_sync)
            return build_dataset(data, context, skip_steps=skip_steps, stats=stats)

        return self.strategy.distribute_datasets_from_function(
            dataset_fn, input_options(self.strategy, self.num_workers))

    # ------------------------------------------------------------ training
    def train(self, evaluate_during_training=False):
        """Runs until `trainer.train_steps`; returns the last metrics.

        Raises:
            TrainingDivergedError: the loss became NaN or infinite.
        """
        cfg = self.config.trainer
        reporter = Reporter(self.model_dir, self.is_chief, cfg.train_steps, self.step)
        self._preemption = PreemptionHandler(self.strategy, self.model_dir, self.save,
                                             lambda: self.step)
        data_stats = PipelineStats()
        iterator = iter(self._train_dataset(self.step * self.accumulation_steps, data_stats))
        self._train_function = self._train_function or self._make_train_function()
        metrics, window, skipped = {}, np.zeros(4), data_stats.as_dict()
        last_saved = self.step
        try:
            while self.step < cfg.train_steps:
                steps = self._steps_until_boundary()
                totals = self._train_function(iterator, steps).numpy()
                metrics = metrics_from_totals(totals)
                metrics["learning_rate"] = float(self.schedule(self.step - 1))
                if not np.isfinite(metrics["loss"]):
                    raise TrainingDivergedError(self._divergence_message(metrics["loss"]))
                window += totals
                step = self.step
                reporter.train_loop_done(
                    step, steps, self.update_batch_size * steps, metrics,
                    summary=step % cfg.summary_interval == 0 or step == cfg.train_steps)
                skipped = _report_skipped(reporter, self.task_id, step, data_stats, skipped)
                # Evaluation first: a checkpoint at this step then also holds
                # the stochastic-path switch decided here.
                if evaluate_during_training and (
                        step % cfg.eval_interval == 0 or step == cfg.train_steps):
                    eval_metrics = self.evaluate(reporter)
                    self._maybe_switch_on_drop_path(metrics_from_totals(window), eval_metrics,
                                                    reporter)
                    window = np.zeros(4)
                    reporter.reset_clock()
                if step % cfg.checkpoint_interval == 0 or step == cfg.train_steps:
                    self.save()
                    last_saved = step
            if last_saved != self.step:
                self.save()
            self._preemption.close()
            # Every worker leaves together: the chief hosts the coordination
            # service, which a worker still saving would lose.
            cluster.wait_for_all_workers("polynet_tf_training_done", self.task_id,
                                         self.num_workers)
        except Preempted as preempted:
            reporter.message("SIGTERM: saved a checkpoint at step %d and stopped.",
                             preempted.step)
            logging.info("task %d: saved the checkpoint of step %d after a SIGTERM",
                         self.task_id, preempted.step)
            self._preemption.close()
            cluster.wait_for_all_workers("polynet_tf_preempted", self.task_id, self.num_workers)
            raise SystemExit(cluster.EXIT_PREEMPTED) from None
        finally:
            _summarize_skipped(self.task_id, data_stats)
            reporter.close()
        return metrics

    def _steps_until_boundary(self):
        cfg = self.config.trainer
        step = self.step
        boundaries = [cfg.train_steps, _next_multiple(step, cfg.checkpoint_interval),
                      _next_multiple(step, cfg.eval_interval),
                      _next_multiple(step, cfg.summary_interval),
                      step + cfg.steps_per_loop]
        return max(1, min(boundaries) - step)

    def _divergence_message(self, loss):
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        return (
            f"The training loss became {loss} by step {self.step}. No checkpoint was written "
            f"for this loop; the last good checkpoint is {latest or '(none yet)'}. Lower "
            "schedule.base_learning_rate, set optimizer.clip_global_norm or check the data, "
            "then restart the same command to resume from that checkpoint.")

    # ---------------------------------------------------------- evaluation
    def evaluate(self, reporter=None, weights_kind=None):
        """Top-1 / top-5 on `eval_data` over every replica of every worker.

        A collective: every worker calls it. The moving BatchNorm statistics
        are first averaged over replicas, so the network evaluated is the one
        a checkpoint or an export holds.

        Args:
            reporter: logs and summarizes the metrics when given.
            weights_kind: "ema" (the default when `trainer.ema_decay` is set:
                the averaged weights, as an export holds) or "raw".

        Returns:
            dict with loss, top1, top5, num_images (the validation set's size
            unless `trainer.eval_steps` cuts it short).

        Raises:
            ValueError: "ema" asked of a run without `trainer.ema_decay`.
        """
        weights_kind = weights_kind or ("raw" if self._ema is None else "ema")
        if weights_kind == "ema" and self._ema is None:
            raise ValueError("weights_kind='ema': this run keeps no EMA (trainer.ema_decay 0).")
        self._sync_batch_norm()
        with (self._ema.swapped() if weights_kind == "ema" else contextlib.nullcontext()):
            metrics = metrics_from_totals(self._evaluator())
        if reporter is not None:
            # Which weights, only where there is a choice (an EMA is kept).
            kind = "" if self._ema is None else f" ({weights_kind} weights)"
            reporter.message("step %d validation%s: top-1 %.4f, top-5 %.4f, "
                             "loss %.4f on %d images", self.step, kind,
                             metrics["top1"], metrics["top5"], metrics["loss"],
                             metrics["num_images"])
            reporter.scalars("eval", self.step, {k: v for k, v in metrics.items()
                                                 if k != "num_images"})
        return metrics

    def _maybe_switch_on_drop_path(self, train_metrics, eval_metrics, reporter):
        """Paper section 4: stochastic paths once training outruns validation."""
        adaptive = self.config.trainer.adaptive_drop_path
        if not adaptive.enabled or int(self.drop_path_switched_on.numpy()):
            return
        gap = train_metrics["top1"] - eval_metrics["top1"]
        if gap > adaptive.gap_threshold:
            rates = set_path_drop_rates(self.model, adaptive.max_rate)
            self.drop_path_switched_on.assign(1)
            reporter.message(
                "step %d: train top-1 %.4f exceeds validation top-1 %.4f by %.4f > %.4f; "
                "stochastic paths on, linear 0 -> %.2f over %d modules",
                self.step, train_metrics["top1"], eval_metrics["top1"], gap,
                adaptive.gap_threshold, rates[-1], len(polyinception_modules(self.model)))


def _report_skipped(reporter, task, step, stats, before):
    """Logs (and on the chief, summarizes) what this worker's pipeline skipped, when it grew.

    Returns:
        The counts now, for the next call's `before`.
    """
    counts = stats.as_dict()
    if counts != before:
        reporter.scalars("train", step, {f"data/{k}": float(v) for k, v in counts.items()})
        logging.warning("task %d, step %d: the input pipeline skipped %d record(s) and the "
                        "rest of %d corrupt file(s) so far (on_error=skip)", task, step,
                        counts["skipped_records"], counts["corrupt_files"])
    return counts


def _summarize_skipped(task, stats):
    counts = stats.as_dict()
    if any(counts.values()):
        message = (f"task {task}: the input pipeline skipped {counts['skipped_records']} "
                   f"bad record(s) and the rest of {counts['corrupt_files']} corrupt file(s) "
                   "in this run (on_error=skip; the log names each one)")
        logging.warning(message)
        print(f"note: {message}", flush=True)


def _accumulators(variables, accumulation_steps):
    """Per-replica gradient sums (no collective on assignment); None without accumulation."""
    if accumulation_steps == 1:
        return None
    return [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                        name=f"accumulated/{v.path}",
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.SUM) for v in variables]


def _remove_tree(path):
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def _next_multiple(step, interval):
    return (step // interval + 1) * interval
