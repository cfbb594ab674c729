"""Optimizer and learning-rate schedule of the paper's recipe (section 4)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="polynet_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then x `decay_rate` every `decay_steps`.

    lr(step) = peak * min(1, (step + 1) / warmup_steps) * decay_rate ** floor(step / decay_steps)

    Args:
        peak: learning rate after warm-up.
        warmup_steps: steps of linear warm-up (0: none).
        decay_steps: interval of the step decay (the paper: 160K).
        decay_rate: factor of each decay (the paper: 0.1).
    """

    def __init__(self, peak, warmup_steps, decay_steps, decay_rate):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.floor(step / self.decay_steps)
        rate = self.peak * tf.pow(self.decay_rate, decays)
        if self.warmup_steps:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


def peak_learning_rate(schedule_config, global_batch_size):
    """The base rate scaled linearly with the global batch (0.45 at 512)."""
    return (schedule_config.base_learning_rate * global_batch_size
            / schedule_config.base_batch_size)


class _SummedOverReplicas:
    """Mixin: `apply` receives gradients already summed over every replica.

    Keras 3's TensorFlow optimizer all-reduces the gradients inside `apply`
    (`_all_reduce_sum_gradients`), after `LossScaleOptimizer` has decided
    from one replica's own gradients whether to skip the step. The training
    step sums them first (`sum_over_replicas`), so that every replica decides
    from the same sum and clipping sees the whole batch's gradient; a second
    sum here would double the step's all-reduce traffic (and the gradients).
    """

    # tests/training/test_replicas.py counts the step's all-reduce ops: a
    # Keras that renamed this method would fail it.
    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


# Keras's optimizers with the mixin; their checkpoints are Keras's (same variables).
_OPTIMIZERS = {name: type(cls.__name__, (_SummedOverReplicas, cls), {})
               for name, cls in (("rmsprop", keras.optimizers.RMSprop),
                                 ("momentum", keras.optimizers.SGD),
                                 ("adam", keras.optimizers.Adam))}


def build_optimizer(optimizer_config, schedule_config, global_batch_size, mixed_precision=None):
    """The optimizer of an experiment, with its schedule.

    Its `apply_gradients` takes gradients summed over the replicas, as
    `sum_over_replicas` returns them; it does not sum them again.

    Args:
        optimizer_config: an `OptimizerConfig`.
        schedule_config: a `ScheduleConfig`.
        global_batch_size: images per step over all replicas.
        mixed_precision: the policy name; "mixed_float16" adds loss scaling.

    Returns:
        (optimizer, schedule).
    """
    schedule = WarmupStepDecay(
        peak_learning_rate(schedule_config, global_batch_size),
        schedule_config.warmup_steps, schedule_config.decay_steps, schedule_config.decay_rate)
    name = optimizer_config.name
    optimizer_class = _OPTIMIZERS[name]
    if name == "rmsprop":
        # Keras's RMSprop puts epsilon inside the square root, as the
        # TensorFlow RMSProp that Inception and PolyNet were trained with.
        optimizer = optimizer_class(
            learning_rate=schedule, rho=optimizer_config.rho,
            momentum=optimizer_config.momentum, epsilon=optimizer_config.epsilon)
    elif name == "momentum":
        optimizer = optimizer_class(learning_rate=schedule,
                                    momentum=optimizer_config.momentum, nesterov=True)
    else:
        optimizer = optimizer_class(learning_rate=schedule, epsilon=optimizer_config.epsilon)
    if mixed_precision == "mixed_float16":
        # Fed the summed gradients, it skips or applies the step (and halves
        # or keeps its scale) alike on every replica.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def classification_loss(labels, logits, num_classes, label_smoothing, global_batch_size):
    """Per-replica share of the mean softmax cross-entropy over the global batch.

    Label smoothing is linear in the targets and keeps their sum 1, so
    smoothing MixUp/CutMix targets `w * a + (1 - w) * b` equals mixing the
    smoothed one-hots `a` and `b` with the same `w`.

    Args:
        labels: int `[batch]` class indices in `[0, num_classes)`, or float
            soft targets `[batch, num_classes]` (MixUp/CutMix), rows summing to 1.
        logits: float32 `[batch, num_classes]`.
        num_classes: width of the one-hot targets.
        label_smoothing: `eps`: targets `t` become `(1 - eps) * t + eps / num_classes`.
        global_batch_size: images per step over all replicas (the divisor).

    Returns:
        (loss summed over this replica's examples / global batch, per-example losses).
    """
    targets = (tf.cast(labels, tf.float32) if labels.shape.rank == 2
               else tf.one_hot(labels, num_classes))
    per_example = keras.losses.categorical_crossentropy(
        targets, logits, from_logits=True, label_smoothing=label_smoothing)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size), per_example


def sum_over_replicas(gradients, optimizer, clip_norm=None):
    """The step's one all-reduce: this replica's gradients summed over all, then clipped.

    Every replica gets the same sum, so `LossScaleOptimizer` takes the same
    skip-or-apply decision everywhere (a replica deciding from its own
    gradients alone could skip while another enters the next collective).
    Clipping follows the paper's recipe (and `tf.clip_by_global_norm` on one
    device): the threshold is on the norm of the whole batch's gradient.
    Under `LossScaleOptimizer` the gradients arrive multiplied by the loss
    scale: the norm is taken of the unscaled gradients, so `clip_norm` means
    the same in mixed_float16 as in float32; the scale is a power of two, so
    unscaling and rescaling are exact. A non-finite norm makes every gradient
    NaN: `LossScaleOptimizer` then skips the step and halves its scale, as for
    the unclipped gradients (without loss scaling, the loss check stops the
    run as diverged).

    Must run in a replica context (inside `strategy.run`).

    Args:
        gradients: this replica's gradients (scaled when `optimizer` is a
            `LossScaleOptimizer`).
        optimizer: the optimizer that will apply them (from `build_optimizer`).
        clip_norm: the threshold on the global norm of the summed, unscaled
            gradients; None or 0: no clipping.

    Returns:
        The summed gradients to hand to `optimizer.apply_gradients` (still
        scaled under loss scaling, as that optimizer expects).
    """
    present = [g for g in gradients if g is not None]  # None: a variable the loss skips
    reduced = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                  present))
    summed = [None if g is None else next(reduced) for g in gradients]
    if not clip_norm:
        return summed
    scale = (tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
             if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None)
    unscaled = [g if g is None or scale is None else g / tf.cast(scale, g.dtype)
                for g in summed]
    clipped, _ = tf.clip_by_global_norm(summed, clip_norm,
                                        use_norm=tf.linalg.global_norm(unscaled))
    return clipped
