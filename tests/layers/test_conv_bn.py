"""ConvBN: inference through the folded kernel, training exactly as conv -> BatchNorm -> ReLU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.layers import ConvBN
from polynet_tf.layers.batch_norm import frozen_statistics
from polynet_tf.models import fold_batch_norms
from tests.conftest import tiny_polynet
from tests.grow.conftest import randomize_batch_norms

EPSILON = 1e-3
MOMENTUM = 0.9


def _unit(num_norms=1, seed=0, **kwargs):
    """A built ConvBN (3 input channels, 5 filters), random BatchNorm parameters and statistics."""
    kwargs.setdefault("kernel_size", 3)
    unit = ConvBN(5, num_norms=num_norms,
                  batch_norm={"epsilon": EPSILON, "momentum": MOMENTUM}, **kwargs)
    unit.build((None, 9, 8, 3))
    return _randomize_norms(unit, seed)


def _randomize_norms(unit, seed):
    rng = np.random.default_rng(seed)
    for norm in unit.norms:
        norm.gamma.assign(rng.uniform(-1.5, 1.5, 5))  # negative scales too
        norm.beta.assign(rng.normal(0.0, 0.5, 5))
        norm.moving_mean.assign(rng.normal(0.0, 0.5, 5))
        norm.moving_variance.assign(rng.uniform(0.2, 3.0, 5))
    return unit


def _inputs(batch=2, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, 9, 8, 3)).astype("float32")


def _numpy_conv(x, kernel, strides, padding):
    """Cross-correlation as TensorFlow computes it ("same": the extra pad row / column last)."""
    x, kernel = x.astype(np.float64), kernel.astype(np.float64)
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    height, width = x.shape[1:3]
    if padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        pad_h = max((out_h - 1) * sh + kh - height, 0)
        pad_w = max((out_w - 1) * sw + kw - width, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                       (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
            out += patch @ kernel[i, j]
    return out


def _numpy_reference(unit, x, norm_index, mean=None, variance=None):
    """conv -> BatchNorm -> ReLU? in float64; the moving statistics unless `mean`, `variance`."""
    norm = unit.norms[norm_index]
    gamma, beta, moving_mean, moving_variance = (
        keras.ops.convert_to_numpy(v).astype(np.float64)
        for v in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
    y = _numpy_conv(x, keras.ops.convert_to_numpy(unit.conv.kernel), unit.strides, unit.padding)
    if mean is None:
        mean, variance = moving_mean, moving_variance
    y = (y - mean) / np.sqrt(variance + EPSILON) * gamma + beta
    return np.maximum(y, 0.0) if unit.activation else y


@pytest.mark.parametrize("options", [
    {},
    {"kernel_size": (1, 3), "activation": False},
    {"strides": 2, "padding": "valid"},
    {"strides": 2, "padding": "same"},
    {"kernel_size": 1},
])
@pytest.mark.parametrize("num_norms", [1, 3])
@pytest.mark.parametrize("through_kernel", [True, False])
def test_inference_equals_conv_batch_norm_relu_computed_in_numpy(
        options, num_norms, through_kernel, monkeypatch):
    # Both rewrites, whichever the unit would pick for these shapes.
    monkeypatch.setattr(ConvBN, "_scales_kernel", lambda self, shape: through_kernel)
    unit = _unit(num_norms, **options)
    x = _inputs()
    for norm_index in range(num_norms):
        expected = _numpy_reference(unit, x, norm_index)
        scale = np.max(np.abs(expected))
        for training in (False, None):  # None is inference, as for BatchNormalization
            got = keras.ops.convert_to_numpy(unit(x, norm_index=norm_index, training=training))
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale)


def test_inference_scales_the_kernel_when_it_is_smaller_than_the_output():
    unit = ConvBN(16, 3)  # 3 x 3 x 8 = 72 kernel elements per output channel
    unit.build((None, 6, 6, 8))
    assert unit._scales_kernel((2, 6, 6, 8))       # 72 <= 2 * 36 output positions
    assert not unit._scales_kernel((1, 6, 6, 8))   # 72 > 36
    assert not unit._scales_kernel((None, 6, 6, 8))  # an unknown batch counts as 1
    assert unit._scales_kernel((None, None, None, 8))  # unknown size: the kernel
    strided = ConvBN(16, 3, strides=2, padding="valid")
    strided.build((None, 9, 9, 8))
    assert not strided._scales_kernel((4, 9, 9, 8))  # 72 > 4 * 16
    assert strided._scales_kernel((5, 9, 9, 8))


def _filter_source(call, x):
    """The ops that make the filter of the traced call's convolution, outermost first."""
    graph = tf.function(call).get_concrete_function(x).graph
    conv, = [op for op in graph.get_operations() if op.type == "Conv2D"]
    chain, op = [], conv.inputs[1].op
    while op.type in ("Cast", "Mul", "Identity"):
        if op.type != "Identity":
            chain.append((op.type, op.outputs[0].dtype.name))
        op = op.inputs[0].op
    return chain


def test_mixed_policy_scales_every_kernel_in_float32_and_casts_it_once():
    # 3 x 3 x 16 kernel elements > 9 output positions: float32 scales the output.
    x = np.random.default_rng(6).normal(size=(1, 3, 3, 16)).astype("float32")
    reference = ConvBN(5, 3, batch_norm={"epsilon": EPSILON, "momentum": MOMENTUM})
    reference.build(x.shape)
    _randomize_norms(reference, seed=5)
    assert not reference._scales_kernel(x.shape)
    # The kernel variable as it is, the BatchNorm on the output.
    assert _filter_source(lambda t: reference(t, training=False), x) == []
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        unit = ConvBN(5, 3, batch_norm={"epsilon": EPSILON, "momentum": MOMENTUM})
        inputs = keras.Input(x.shape[1:])
        model = keras.Model(inputs, unit(inputs))  # a unit inside a network, as PolyNet()'s are
    finally:
        keras.config.set_dtype_policy("float32")
    unit.set_weights(reference.get_weights())
    # A float32 product rounded once to bfloat16, not the kernel autocast and
    # then scaled in bfloat16.
    assert _filter_source(lambda t: model(t, training=False), x) == [
        ("Cast", "bfloat16"), ("Mul", "float32")]
    expected = _numpy_reference(reference, x, 0)
    # Called alone, outside any layer, Keras autocasts even a layer that does
    # not ask for it: the kernel then comes rounded, with the same result to
    # bfloat16's precision.
    for call in (model, unit):
        got = keras.ops.convert_to_numpy(keras.ops.cast(call(x, training=False), "float32"))
        assert got.shape == expected.shape
        # bfloat16 inputs and kernel: 8 bits of mantissa each, 144 products summed.
        np.testing.assert_allclose(got, expected, rtol=0, atol=0.03 * np.abs(expected).max())


def test_inference_in_a_graph_and_with_synchronized_settings():
    unit = _unit(2)
    x = _inputs()
    expected = _numpy_reference(unit, x, 1)
    traced = tf.function(lambda t: unit(t, norm_index=1, training=False))
    atol = 2e-6 * np.abs(expected).max()
    np.testing.assert_allclose(traced(x).numpy(), expected, rtol=0, atol=atol)
    synchronized = ConvBN(5, 3, num_norms=2, batch_norm={"epsilon": EPSILON, "synchronized": True})
    synchronized.build(x.shape)
    synchronized.set_weights(unit.get_weights())
    np.testing.assert_allclose(synchronized(x, norm_index=1, training=False).numpy(), expected,
                               rtol=0, atol=atol)


def test_inference_reads_but_never_moves_the_statistics():
    unit = _unit(2)
    before = [w.numpy() for w in unit.weights]
    unit(_inputs(), norm_index=1, training=False)
    for was, weight in zip(before, unit.weights):
        np.testing.assert_array_equal(weight.numpy(), was)


def _training_step(unit, x, norm_index, reference):
    """Output and gradients (kernel, gamma, beta) of one traced training call of `unit`.

    `reference` computes it with the sublayers called one after the other,
    conv -> BatchNorm(training=True) -> ReLU, as ConvBN did before inference
    took the folded kernel.
    """
    norm = unit.norms[norm_index]
    weights = [unit.conv.kernel, norm.gamma, norm.beta]
    upstream = tf.constant(np.random.default_rng(5).normal(
        size=unit.compute_output_shape(x.shape)).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            if reference:
                y = norm(unit.conv(x), training=True)
                y = keras.ops.relu(y) if unit.activation else y
            else:
                y = unit(x, norm_index=norm_index, training=True)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [w.value for w in weights])

    return step(x)


@pytest.mark.parametrize("norm_index", [0, 2])
def test_training_is_conv_batch_norm_relu_with_batch_statistics(norm_index):
    unit, twin = _unit(3), _unit(3)
    twin.set_weights(unit.get_weights())
    x = _inputs(batch=4)
    moving = [unit.norms[norm_index].moving_mean.numpy(),
              unit.norms[norm_index].moving_variance.numpy()]
    y, grads = _training_step(unit, x, norm_index, reference=False)
    y_ref, grads_ref = _training_step(twin, x, norm_index, reference=True)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-6, atol=1e-6)
    for grad, grad_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-5, atol=1e-5)
    # Batch statistics, in NumPy: the output and the moving-average update.
    conv = _numpy_conv(x, unit.conv.kernel.numpy(), unit.strides, unit.padding)
    mean, variance = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y.numpy(), _numpy_reference(unit, x, norm_index, mean, variance),
                               rtol=0, atol=1e-5)
    norm = unit.norms[norm_index]
    np.testing.assert_allclose(norm.moving_mean.numpy(),
                               MOMENTUM * moving[0] + (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.moving_variance.numpy(),
                               MOMENTUM * moving[1] + (1 - MOMENTUM) * variance, rtol=1e-5)
    # The other BatchNorms were not touched.
    for index, other in enumerate(unit.norms):
        if index != norm_index:
            np.testing.assert_array_equal(other.moving_mean.numpy(),
                                          twin.norms[index].moving_mean.numpy())


def test_frozen_statistics_and_frozen_batch_norms_in_training():
    unit = _unit(1)
    x = _inputs(batch=4)
    conv = _numpy_conv(x, unit.conv.kernel.numpy(), unit.strides, unit.padding)
    moving = unit.norms[0].moving_mean.numpy()
    with frozen_statistics():
        y = unit(x, training=True)
    # Batch statistics, moving statistics left alone.
    expected = _numpy_reference(unit, x, 0, conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(unit.norms[0].moving_mean.numpy(), moving)
    # A non-trainable BatchNorm normalizes with its moving statistics in training too.
    unit.norms[0].trainable = False
    expected = _numpy_reference(unit, x, 0)
    np.testing.assert_allclose(unit(x, training=True).numpy(), expected, rtol=0,
                               atol=2e-6 * np.abs(expected).max())
    np.testing.assert_array_equal(unit.norms[0].moving_mean.numpy(), moving)


def _unfolded_inference(monkeypatch):
    """Makes ConvBN compute inference as before: conv, then the BatchNorm layer on its output."""
    monkeypatch.setattr(ConvBN, "_inference",
                        lambda self, inputs, norm: norm(self.conv(inputs), training=False))


ARCHITECTURE = "A: 2way | B: poly3[convs] | C: 2way"  # the released module kinds


def _tiny(**options):
    return randomize_batch_norms(tiny_polynet(
        ARCHITECTURE, width_multiplier=0.1, path_gates=True, classifier_activation=None,
        **options), seed=4)


def test_tiny_polynet_inference_equals_the_unfolded_network_and_fold_batch_norms(monkeypatch):
    model = _tiny()
    x = np.random.default_rng(2).normal(size=(3, 75, 75, 3)).astype("float32")
    logits = model(x, training=False).numpy()
    tolerance = 1e-5 * np.std(logits)
    assert np.max(np.abs(model.predict_on_batch(x) - logits)) <= tolerance
    assert np.max(np.abs(model.predict(x, verbose=0) - logits)) <= tolerance
    assert np.max(np.abs(fold_batch_norms(model)(x).numpy() - logits)) <= tolerance
    _unfolded_inference(monkeypatch)
    unfolded = keras.Model(model.input, model.output)  # a fresh predict function
    assert np.max(np.abs(unfolded(x, training=False).numpy() - logits)) <= tolerance
    assert np.max(np.abs(unfolded.predict_on_batch(x) - logits)) <= tolerance


def test_mixed_bfloat16_policy_is_close_to_float32(monkeypatch):
    model = _tiny()
    x = np.random.default_rng(3).normal(size=(4, 75, 75, 3)).astype("float32")
    reference = model(x, training=False).numpy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = tiny_polynet(ARCHITECTURE, width_multiplier=0.1, path_gates=True,
                             classifier_activation=None)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(model.get_weights())
    assert mixed.get_layer("stage_b_0").compute_dtype == "bfloat16"
    logits = keras.ops.convert_to_numpy(keras.ops.cast(mixed.predict_on_batch(x), "float32"))
    # bfloat16 keeps 8 bits of mantissa: close, not equal (what fold_batch_norms'
    # bfloat16 form gets, tests/models/test_folding.py).
    error = np.max(np.abs(logits - reference))
    assert 0 < error < 0.05 * np.std(reference) + 1e-3
    folded = fold_batch_norms(model, dtype_policy="mixed_bfloat16")
    assert np.max(np.abs(folded(x).numpy() - reference)) < 0.05 * np.std(reference) + 1e-3
    # Not worse than the unfolded mixed network (float32 BatchNorm between casts).
    _unfolded_inference(monkeypatch)
    unfolded = keras.Model(mixed.input, mixed.output)
    unfolded_logits = keras.ops.convert_to_numpy(
        keras.ops.cast(unfolded(x, training=False), "float32"))
    assert error < 2 * np.max(np.abs(unfolded_logits - reference))
