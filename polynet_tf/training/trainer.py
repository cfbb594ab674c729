"""The custom training loop (Keras 3 `fit` fails under MultiWorkerMirroredStrategy).

`strategy.run` inside `tf.function`, `distribute_datasets_from_function` over
the data package's sharded pipeline, `tf.nn.compute_average_loss`, a
`tf.train.CheckpointManager` written by the chief (other workers write to a
temporary directory, as tf.distribute requires every worker to save), and
`PreemptionCheckpointHandler` on several workers. A restarted job resumes
from the latest checkpoint and the same data stream: the input pipeline is a
pure function of (seed, step) and skips what was consumed.
"""

import gc
import os
import shutil
import signal

import keras
import numpy as np
import tensorflow as tf

from polynet_tf.data import build_dataset
from polynet_tf.models import polyinception_modules, set_path_drop_rates
from polynet_tf.models.factory import build_model
from polynet_tf.training import cluster
from polynet_tf.training.optimization import build_optimizer
from polynet_tf.training.reporting import Reporter

CHECKPOINT_SUBDIR = "checkpoints"


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
        # Always set: a policy left by an earlier Trainer in this process must
        # not leak into a float32 run.
        keras.mixed_precision.set_global_policy(config.trainer.mixed_precision or "float32")
        # Same initial weights on every run (and every worker) of a config.
        keras.utils.set_random_seed(config.runtime.seed)
        with strategy.scope():
            self.model = build_model(config.model, image_size=config.train_data.image_size)
            self.optimizer, self.schedule = build_optimizer(
                config.optimizer, config.schedule, self.global_batch_size,
                config.trainer.mixed_precision)
            self.optimizer.build(self.model.trainable_variables)
            self.global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.drop_path_switched_on = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="drop_path_switched_on",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._kernels = [v for v in self.model.trainable_variables if v.path.endswith("kernel")]
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.global_step,
            drop_path_switched_on=self.drop_path_switched_on)
        self.checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
        self._write_dir = (self.checkpoint_dir if self.is_chief else
                           os.path.join(model_dir, ".worker_tmp", f"worker_{self.task_id}"))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._write_dir, max_to_keep=config.trainer.max_checkpoints)
        if self.is_chief:
            os.makedirs(model_dir, exist_ok=True)
        self.restored_from = self._restore(init_from, init_from_architecture)
        self._train_function = None
        self._eval_function = None
        self._sigterm = False

    # ----------------------------------------------------------------- state
    @property
    def step(self):
        return int(self.global_step.numpy())

    def _restore(self, init_from, init_from_architecture):
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if int(self.drop_path_switched_on.numpy()):
                set_path_drop_rates(self.model, self.config.trainer.adaptive_drop_path.max_rate)
            return latest
        if init_from:
            from polynet_tf.grow import initialize_from_checkpoint  # noqa: PLC0415

            model = self.config.model
            initialize_from_checkpoint(
                self.model, init_from, init_from_architecture or model.architecture,
                mode=self.init_from_mode,
                report_path=os.path.join(self.model_dir, "init_from") if self.is_chief else None,
                width_multiplier=model.width_multiplier, classes=model.num_classes,
                bn_epsilon=model.bn_epsilon, bn_momentum=model.bn_momentum)
            return init_from
        return None

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
        path = self.manager.save(checkpoint_number=self.step)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path

    @tf.function
    def _state_is_finite(self):
        checks = [tf.reduce_all(tf.math.is_finite(v)) for v in
                  list(self.model.trainable_variables) + list(self.optimizer.variables)
                  if "float" in str(v.dtype)]
        return tf.reduce_all(tf.stack(checks))

    # ------------------------------------------------------------- functions
    def _loss(self, labels, logits):
        depth = self.config.model.num_classes
        smoothing = self.config.optimizer.label_smoothing
        per_example = keras.losses.categorical_crossentropy(
            tf.one_hot(labels, depth), logits, from_logits=True, label_smoothing=smoothing)
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
        decay = self.config.optimizer.weight_decay
        if decay:
            l2 = tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in self._kernels])
            loss += tf.nn.scale_regularization_loss(decay * l2)
        return loss, per_example

    def _train_step(self, images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            loss, per_example = self._loss(labels, logits)
            scaled = (self.optimizer.scale_loss(loss)
                      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else loss)
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        clip = self.config.optimizer.clip_global_norm
        if clip:
            # Keras clips per replica before summing; clip the summed gradient.
            context = tf.distribute.get_replica_context()
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            _, norm = tf.clip_by_global_norm(summed, clip)
            factor = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
            gradients = [g * tf.cast(factor, g.dtype) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.global_step.assign_add(1)
        return _batch_totals(labels, logits, tf.reduce_sum(per_example))

    def _make_train_function(self):
        strategy = self.strategy

        @tf.function
        def train_steps(iterator, num_steps):
            totals = tf.zeros([4], tf.float32)
            for _ in tf.range(num_steps):
                per_replica = strategy.run(self._train_step, args=next(iterator))
                totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            return totals

        return train_steps

    def _train_dataset(self, skip_steps):
        data = self.config.train_data
        return self.strategy.distribute_datasets_from_function(
            lambda context: build_dataset(data, context, skip_steps=skip_steps))

    # ------------------------------------------------------------ training
    def train(self, evaluate_during_training=False):
        """Runs until `trainer.train_steps`; returns the last metrics.

        Raises:
            TrainingDivergedError: the loss became NaN or infinite.
        """
        cfg = self.config.trainer
        reporter = Reporter(self.model_dir, self.is_chief, cfg.train_steps, self.step)
        self._install_sigterm_handler()
        preemption = self._preemption_handler()
        iterator = iter(self._train_dataset(self.step))
        self._train_function = self._train_function or self._make_train_function()
        metrics, window = {}, np.zeros(4)
        last_saved = self.step
        try:
            while self.step < cfg.train_steps:
                steps = self._steps_until_boundary()
                if preemption is not None:
                    totals = preemption.run(self._train_function, iterator, tf.constant(steps))
                else:
                    totals = self._train_function(iterator, tf.constant(steps))
                totals = totals.numpy()
                metrics = _metrics(totals)
                metrics["learning_rate"] = float(self.schedule(self.step - 1))
                if not np.isfinite(metrics["loss"]):
                    raise TrainingDivergedError(self._divergence_message(metrics["loss"]))
                window += totals
                reporter.train_loop_done(self.step, steps, self.global_batch_size * steps, metrics)
                step = self.step
                # Evaluation first: a checkpoint at this step then also holds
                # the stochastic-path switch decided here.
                if evaluate_during_training and not self._sigterm and (
                        step % cfg.eval_interval == 0 or step == cfg.train_steps):
                    eval_metrics = self.evaluate(reporter)
                    self._maybe_switch_on_drop_path(_metrics(window), eval_metrics, reporter)
                    window = np.zeros(4)
                    reporter.reset_clock()
                if step % cfg.checkpoint_interval == 0 or step == cfg.train_steps or self._sigterm:
                    self.save()
                    last_saved = step
                if self._sigterm:
                    reporter.message("SIGTERM: saved a checkpoint at step %d and stopped.", step)
                    raise SystemExit(143)
            if last_saved != self.step:
                self.save()
            # Stop the preemption watchers before the chief (which hosts the
            # coordination service) can exit, then wait for every worker.
            del preemption
            gc.collect()
            self._sum_over_workers(np.zeros(1))
        finally:
            reporter.close()
        return metrics

    def _steps_until_boundary(self):
        cfg = self.config.trainer
        step = self.step
        boundaries = [cfg.train_steps, _next_multiple(step, cfg.checkpoint_interval),
                      _next_multiple(step, cfg.eval_interval),
                      step + cfg.steps_per_loop]
        return max(1, min(boundaries) - step)

    def _divergence_message(self, loss):
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        return (
            f"The training loss became {loss} by step {self.step}. No checkpoint was written "
            f"for this loop; the last good checkpoint is {latest or '(none yet)'}. Lower "
            "schedule.base_learning_rate, set optimizer.clip_global_norm or check the data, "
            "then restart the same command to resume from that checkpoint.")

    def _install_sigterm_handler(self):
        if self.num_workers > 1:
            return  # PreemptionCheckpointHandler coordinates all workers.

        def on_sigterm(signum, frame):
            self._sigterm = True

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:
            pass  # not the main thread (e.g. in tests): no handler

    def _preemption_handler(self):
        if self.num_workers <= 1:
            return None
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            self.strategy.cluster_resolver, self.manager)

    # ---------------------------------------------------------- evaluation
    def evaluate(self, reporter=None):
        """Top-1 / top-5 on `eval_data`: each worker its shard, then summed.

        Returns:
            dict with loss, top1, top5, num_images.
        """
        data = self.config.eval_data
        context = tf.distribute.InputContext(
            num_input_pipelines=self.num_workers, input_pipeline_id=self.task_id,
            num_replicas_in_sync=self.num_workers)
        dataset = build_dataset(data, context)
        if self.config.trainer.eval_steps:
            dataset = dataset.take(self.config.trainer.eval_steps)
        if self._eval_function is None:
            self._eval_function = tf.function(self._eval_batch)
        totals = np.zeros(4, np.float64)
        for images, labels in dataset:
            totals += self._eval_function(images, labels).numpy()
        totals = self._sum_over_workers(totals)
        metrics = _metrics(totals)
        if reporter is not None:
            reporter.message("step %d validation: top-1 %.4f, top-5 %.4f, loss %.4f on %d images",
                             self.step, metrics["top1"], metrics["top5"], metrics["loss"],
                             metrics["num_images"])
            reporter.scalars("eval", self.step, {k: v for k, v in metrics.items()
                                                 if k != "num_images"})
        return metrics

    def _eval_batch(self, images, labels):
        logits = tf.cast(self.model(images, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                   from_logits=True)
        return _batch_totals(labels, logits, tf.reduce_sum(per_example))

    def _sum_over_workers(self, totals):
        if self.num_workers <= 1:
            return totals
        local = tf.constant(totals, tf.float32)

        def value(context):
            first = context.replica_id_in_sync_group % (
                self.strategy.num_replicas_in_sync // self.num_workers) == 0
            return local if first else tf.zeros_like(local)

        distributed = self.strategy.experimental_distribute_values_from_function(value)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, distributed, axis=None).numpy()

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


def _batch_totals(labels, logits, loss_sum):
    """[summed loss, top-1 hits, top-5 hits, images] of one batch."""
    labels = tf.cast(labels, tf.int32)
    top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
    top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, min(5, logits.shape[-1])),
                                 tf.float32))
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([loss_sum, top1, top5, count])


def _metrics(totals):
    count = max(float(totals[3]), 1.0)
    return {"loss": float(totals[0]) / count, "top1": float(totals[1]) / count,
            "top5": float(totals[2]) / count, "num_images": int(totals[3])}


def _next_multiple(step, interval):
    return (step // interval + 1) * interval
