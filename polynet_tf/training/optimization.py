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


def build_optimizer(optimizer_config, schedule_config, global_batch_size, mixed_precision=None):
    """The optimizer of an experiment, with its schedule.

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
    if name == "rmsprop":
        # Keras's RMSprop puts epsilon inside the square root, as the
        # TensorFlow RMSProp that Inception and PolyNet were trained with.
        optimizer = keras.optimizers.RMSprop(
            learning_rate=schedule, rho=optimizer_config.rho,
            momentum=optimizer_config.momentum, epsilon=optimizer_config.epsilon)
    elif name == "momentum":
        optimizer = keras.optimizers.SGD(learning_rate=schedule,
                                         momentum=optimizer_config.momentum, nesterov=True)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=schedule,
                                          epsilon=optimizer_config.epsilon)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def classification_loss(labels, logits, num_classes, label_smoothing, global_batch_size):
    """Per-replica share of the mean softmax cross-entropy over the global batch.

    Args:
        labels: int `[batch]` class indices in `[0, num_classes)`.
        logits: float32 `[batch, num_classes]`.
        num_classes: width of the one-hot targets.
        label_smoothing: `eps`: targets are `(1 - eps) * one_hot + eps / num_classes`.
        global_batch_size: images per step over all replicas (the divisor).

    Returns:
        (loss summed over this replica's examples / global batch, per-example losses).
    """
    per_example = keras.losses.categorical_crossentropy(
        tf.one_hot(labels, num_classes), logits, from_logits=True,
        label_smoothing=label_smoothing)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size), per_example


def clip_by_global_norm_across_replicas(gradients, clip_norm, optimizer):
    """Clips this replica's gradients so that their sum over replicas has norm <= clip.

    Keras clips each replica's gradients before they are summed; the paper's
    recipe (and `tf.clip_by_global_norm` on one device) clips the gradient of
    the whole batch. Under `LossScaleOptimizer` the gradients arrive multiplied
    by the loss scale: the norm is taken of the unscaled gradients, so
    `clip_norm` means the same in mixed_float16 as in float32. The scale is a
    power of two, so unscaling and rescaling are exact.

    Must run in a replica context (inside `strategy.run`).

    Args:
        gradients: this replica's gradients (scaled when `optimizer` is a
            `LossScaleOptimizer`).
        clip_norm: the threshold on the global norm of the summed, unscaled
            gradients.
        optimizer: the optimizer that will apply them.

    Returns:
        The gradients to hand to `optimizer.apply_gradients` (still scaled
        under loss scaling, as that optimizer expects).
    """
    scale = (tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
             if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None)
    context = tf.distribute.get_replica_context()
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    if scale is not None:
        summed = [g / tf.cast(scale, g.dtype) for g in summed]
    norm = tf.linalg.global_norm(summed)
    # A non-finite norm gives a NaN factor: LossScaleOptimizer then skips the
    # step and lowers its scale, as it would for the unclipped gradients.
    factor = tf.minimum(1.0, clip_norm / tf.maximum(norm, 1e-12))
    return [g * tf.cast(factor, g.dtype) for g in gradients]
