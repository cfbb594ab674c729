import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.configs import OptimizerConfig, ScheduleConfig
from polynet_tf.training.optimization import WarmupStepDecay, build_optimizer, peak_learning_rate


def test_learning_rate_scales_linearly_with_the_batch():
    schedule = ScheduleConfig()
    assert peak_learning_rate(schedule, 512) == pytest.approx(0.45)
    assert peak_learning_rate(schedule, 256) == pytest.approx(0.225)
    assert peak_learning_rate(schedule, 32) == pytest.approx(0.028125)


def test_warmup_then_step_decay():
    lr = WarmupStepDecay(0.4, warmup_steps=10, decay_steps=100, decay_rate=0.1)
    values = [float(lr(step)) for step in (0, 4, 9, 50, 99, 100, 199, 200, 250)]
    np.testing.assert_allclose(values, [0.04, 0.2, 0.4, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004],
                               rtol=1e-6)
    # The paper: 0.45, x0.1 every 160K of 560K steps (three decays).
    paper = WarmupStepDecay(0.45, 0, 160_000, 0.1)
    np.testing.assert_allclose([float(paper(s)) for s in (0, 159_999, 160_000, 480_000, 559_999)],
                               [0.45, 0.45, 0.045, 0.00045, 0.00045], rtol=1e-5)


def test_rmsprop_matches_the_tensorflow_rmsprop_recipe():
    """decay 0.9, momentum 0.9, epsilon 1.0 inside the square root (TF's RMSProp)."""
    optimizer, _ = build_optimizer(OptimizerConfig(), ScheduleConfig(base_learning_rate=0.1,
                                                                      base_batch_size=1), 1)
    variable = tf.Variable([1.0, -2.0])
    gradients = [np.array([0.5, -1.5]), np.array([2.0, 0.1]), np.array([-1.0, 1.0])]
    ms, mom, value = np.zeros(2), np.zeros(2), np.array([1.0, -2.0])
    for g in gradients:
        optimizer.apply_gradients([(tf.constant(g, tf.float32), variable)])
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / np.sqrt(ms + 1.0)
        value = value - mom
    np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5)


def _clipped_update(optimizer, gradient, clip):
    """One SGD(lr=1) step from zero with the trainer's clipping; returns the variable."""
    from polynet_tf.training.optimization import sum_over_replicas

    variable = tf.Variable(np.zeros(2, np.float32))
    optimizer.build([variable])
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        gradient = optimizer.scale_loss(gradient)  # what the tape gives under scaling
    clipped = sum_over_replicas([tf.constant(gradient)], optimizer, clip)
    optimizer.apply_gradients([(clipped[0], variable)])
    return variable.numpy()


def test_clipping_means_the_same_under_loss_scaling():
    gradient = np.array([3.0, 4.0], np.float32)  # norm 5
    plain = _clipped_update(keras.optimizers.SGD(1.0), gradient, 1.0)
    np.testing.assert_allclose(plain, [-0.6, -0.8], rtol=1e-6)
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0))
    assert float(scaled.scale_loss(1.0)) == 2.0 ** 15
    np.testing.assert_array_equal(_clipped_update(scaled, gradient, 1.0), plain)
    # Below the threshold nothing changes.
    np.testing.assert_allclose(_clipped_update(keras.optimizers.SGD(1.0), gradient, 10.0),
                               [-3.0, -4.0], rtol=1e-6)


def test_label_smoothing_matches_the_formula():
    from polynet_tf.training.optimization import classification_loss

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    loss, per_example = classification_loss(tf.constant(labels), tf.constant(logits), 3, 0.3, 4)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = np.eye(3)[labels] * 0.7 + 0.3 / 3
    expected = -(targets * log_probs).sum(axis=1)
    np.testing.assert_allclose(per_example.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected.sum() / 4, rtol=1e-5)  # global batch 4


def test_a_non_finite_norm_skips_the_loss_scaled_step():
    """Clipping an infinite gradient gives NaN (not a zero step): the step is skipped."""
    from polynet_tf.training.optimization import sum_over_replicas

    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0))
    variable = tf.Variable(np.ones(2, np.float32))
    optimizer.build([variable])
    gradient = tf.constant([np.inf, 1.0], tf.float32)
    clipped = sum_over_replicas([gradient], optimizer, 1.0)
    assert np.isnan(clipped[0].numpy()).all()
    optimizer.apply_gradients([(clipped[0], variable)])
    np.testing.assert_array_equal(variable.numpy(), [1.0, 1.0])
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 14

