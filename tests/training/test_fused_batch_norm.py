"""Training-mode BatchNorm through TensorFlow's fused kernel against Keras's layer."""

import keras
import numpy as np
import tensorflow as tf

from polynet_tf.layers import ConvBN
from polynet_tf.layers.batch_norm import (
    BatchNormSettings,
    frozen_statistics,
    normalize_in_training,
    training_batch_norm_kernel,
)
from polynet_tf.training.fused_batch_norm import fused_batch_norm
from tests.layers.test_rematerialization import _inputs, _pair


def _unit(input_shape=(2, 9, 9, 5), seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    unit = ConvBN(7, 3, **kwargs)
    unit.build(input_shape)
    rng = np.random.default_rng(seed)
    for norm in unit.norms:
        norm.gamma.assign(rng.uniform(0.5, 1.5, 7))
        norm.beta.assign(rng.normal(size=7))
        norm.moving_mean.assign(rng.normal(size=7))
        norm.moving_variance.assign(rng.uniform(0.5, 2.0, 7))
    inputs = tf.constant(rng.normal(size=input_shape) * 3 + 1, tf.float32)
    return unit, inputs


def _train_call(unit, inputs, kernel, frozen=False):
    """Outputs, gradients (input, then the unit's trainable weights) and moving statistics."""
    state = [v.numpy() for v in unit.weights]

    @tf.function
    def step(x):
        with training_batch_norm_kernel(kernel), tf.GradientTape() as tape:
            tape.watch(x)
            if frozen:
                with frozen_statistics():
                    y = unit(x, training=True)
            else:
                y = unit(x, training=True)
            # A loss that weighs every output differently: the gradient is not trivial.
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2 * tf.range(
                1.0, 1.0 + y.shape[-1]))
        return y, tape.gradient(loss, [x] + unit.trainable_weights)

    outputs, gradients = step(inputs)
    statistics = [v.numpy() for norm in unit.norms
                  for v in (norm.moving_mean, norm.moving_variance)]
    op_types = {op.type for op in step.get_concrete_function(inputs).graph.get_operations()}
    for variable, value in zip(unit.weights, state):
        variable.assign(value)
    return outputs.numpy(), [g.numpy() for g in gradients], statistics, op_types


def test_fused_kernel_matches_keras_layer_outputs_gradients_and_statistics():
    unit, inputs = _unit()
    keras_out, keras_grads, keras_stats, keras_ops = _train_call(unit, inputs, None)
    fused_out, fused_grads, fused_stats, fused_ops = _train_call(unit, inputs, fused_batch_norm)
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormV3" not in keras_ops
    np.testing.assert_allclose(fused_out, keras_out, atol=2e-5)
    for fused, reference in zip(fused_grads, keras_grads):
        np.testing.assert_allclose(fused, reference, rtol=2e-4, atol=2e-4 * np.abs(reference).max())
    # Moved towards the batch statistics, the variance the biased one, as Keras does.
    np.testing.assert_allclose(fused_stats, keras_stats, rtol=1e-5, atol=1e-6)
    mean_before = unit.norms[0].moving_mean.numpy()
    assert not np.allclose(fused_stats[0], mean_before)


def test_frozen_statistics_normalize_with_the_batch_and_leave_moving_statistics():
    unit, inputs = _unit()
    before = [unit.norms[0].moving_mean.numpy(), unit.norms[0].moving_variance.numpy()]
    updated_out, _, _, _ = _train_call(unit, inputs, fused_batch_norm)
    frozen_out, frozen_grads, frozen_stats, ops = _train_call(
        unit, inputs, fused_batch_norm, frozen=True)
    _, keras_grads, _, _ = _train_call(unit, inputs, None, frozen=True)
    assert "FusedBatchNormV3" in ops
    np.testing.assert_array_equal(frozen_out, updated_out)
    np.testing.assert_array_equal(frozen_stats[0], before[0])
    np.testing.assert_array_equal(frozen_stats[1], before[1])
    for fused, reference in zip(frozen_grads, keras_grads):
        np.testing.assert_allclose(fused, reference, rtol=2e-4, atol=2e-4 * np.abs(reference).max())


def test_one_value_per_channel_gives_a_zero_batch_variance_as_keras_does():
    unit, inputs = _unit(input_shape=(1, 3, 3, 5), padding="valid")  # output 1x1x7
    keras_out, _, keras_stats, _ = _train_call(unit, inputs, None)
    fused_out, _, fused_stats, _ = _train_call(unit, inputs, fused_batch_norm)
    assert np.all(np.isfinite(fused_stats[1]))
    np.testing.assert_allclose(fused_stats, keras_stats, rtol=1e-6, atol=1e-7)
    # Both give beta: x - mean is 0 up to the rounding of the mean, which
    # 1 / sqrt(epsilon) (316) amplifies in Keras's separate ops.
    np.testing.assert_allclose(fused_out, keras_out, atol=1e-4)


def test_bfloat16_inputs_normalize_in_the_fused_kernel_with_float32_statistics():
    unit, inputs = _unit(dtype="mixed_bfloat16")
    keras_out, _, keras_stats, _ = _train_call(unit, inputs, None)
    fused_out, _, fused_stats, ops = _train_call(unit, inputs, fused_batch_norm)
    assert "FusedBatchNormV3" in ops
    assert fused_out.dtype == keras_out.dtype  # bfloat16, the unit's compute dtype
    assert unit.norms[0].moving_mean.dtype == "float32"
    scale = np.abs(keras_out.astype(np.float32)).max()
    np.testing.assert_allclose(fused_out.astype(np.float32), keras_out.astype(np.float32),
                               atol=2e-2 * scale)
    np.testing.assert_allclose(fused_stats, keras_stats, rtol=2e-2, atol=2e-2)


def test_kernel_declines_what_it_cannot_compute():
    synchronized, inputs = _unit(batch_norm=BatchNormSettings(synchronized=True))
    assert fused_batch_norm(synchronized.norms[0], synchronized.conv(inputs), True) is None
    flat = keras.layers.BatchNormalization(epsilon=1e-5)
    flat.build((4, 6))
    assert fused_batch_norm(flat, tf.ones((4, 6)), True) is None
    # Declined: the layer computes it, with the kernel in scope.
    keras_out, _, _, _ = _train_call(synchronized, inputs, None)
    scoped_out, _, _, ops = _train_call(synchronized, inputs, fused_batch_norm)
    assert "FusedBatchNormV3" not in ops
    np.testing.assert_array_equal(scoped_out, keras_out)


def test_a_batch_norm_that_is_not_trainable_uses_its_moving_statistics():
    unit, inputs = _unit()
    norm = unit.norms[0]
    norm.trainable = False
    conv_out = unit.conv(inputs)
    with training_batch_norm_kernel(fused_batch_norm):
        outputs = normalize_in_training(norm, conv_out)
    np.testing.assert_allclose(outputs, norm(conv_out, training=False), atol=1e-6)


def test_each_norm_of_a_shared_conv_updates_only_its_own_statistics():
    unit, inputs = _unit(num_norms=3)
    before = [norm.moving_mean.numpy() for norm in unit.norms]
    with training_batch_norm_kernel(fused_batch_norm):
        unit(inputs, norm_index=1, training=True)
    np.testing.assert_array_equal(unit.norms[0].moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(unit.norms[2].moving_mean.numpy(), before[2])
    assert not np.allclose(unit.norms[1].moving_mean.numpy(), before[1])


def test_a_rematerialized_module_recomputes_through_the_kernel_without_moving_statistics():
    plain, remat = _pair("B", "poly3[convs]", drop_path_rate=0.0)
    x = _inputs("B")
    statistics = {}
    for name, layer in (("plain", plain), ("remat", remat)):
        @tf.function
        def step(x, layer=layer):
            with training_batch_norm_kernel(fused_batch_norm), tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * tf.sin(tf.range(1.0, 1.0 + y.shape[-1])))
                gradients = tape.gradient(loss, [x] + layer.trainable_variables)
            return y, gradients

        y, gradients = step(tf.constant(x))
        graph_ops = {op.type for op in step.get_concrete_function(tf.constant(x)).graph
                     .get_operations()}
        assert "FusedBatchNormV3" in graph_ops
        statistics[name] = (y.numpy(), [g.numpy() for g in gradients],
                            [v.numpy() for v in layer.non_trainable_variables])
    (y_plain, g_plain, s_plain), (y_remat, g_remat, s_remat) = statistics.values()
    np.testing.assert_allclose(y_remat, y_plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_plain, g_remat):
        scale = np.abs(a).max() + 1e-12
        np.testing.assert_allclose(b / scale, a / scale, atol=1e-5)
    # Moved once (by the forward pass), not again by the recomputation.
    for a, b in zip(s_plain, s_remat):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
