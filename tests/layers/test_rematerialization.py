"""PolyInceptionModule(rematerialize=True): same outputs, gradients and statistics, less kept."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.layers import InceptionResidualBlock, PolyInceptionModule

WIDTH = 0.0625
SHAPES = {"A": (9, 9, 24), "B": (5, 5, 72), "C": (3, 3, 128)}
MOMENTUM = 0.9


def _pair(block_type, module, drop_path_rate=0.4, seed=7):
    """A plain module and a rematerialized one with the same weights and mask seed."""
    layers = []
    for rematerialize in (False, True):
        layer = PolyInceptionModule(
            block_type, module, residual_scale=0.5, drop_path_rate=drop_path_rate,
            width_multiplier=WIDTH, batch_norm={"momentum": MOMENTUM}, seed=seed,
            rematerialize=rematerialize)
        layer.build((None, *SHAPES[block_type]))
        layers.append(layer)
    layers[1].set_weights(layers[0].get_weights())
    return layers


def _inputs(block_type, batch=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *SHAPES[block_type])).astype("float32")


def _train_step(layer, x):
    """One traced training step: output, gradients w.r.t. input and weights."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            # A loss that weighs every output element differently.
            weights = tf.reshape(tf.sin(tf.cast(tf.range(tf.size(y)), y.dtype)), tf.shape(y))
            loss = tf.reduce_sum(y * weights)
        return y, tape.gradient(loss, [x] + layer.trainable_variables)

    y, gradients = step(tf.constant(x))
    return y.numpy(), [g.numpy() for g in gradients]


@pytest.mark.parametrize("block_type, module", [
    ("A", "2way"), ("B", "poly3[convs]"), ("C", "mpoly2+ir"), ("B", "poly2"),
])
def test_gradients_and_statistics_equal_the_plain_module(block_type, module):
    plain, remat = _pair(block_type, module)
    x = _inputs(block_type)
    y_plain, g_plain = _train_step(plain, x)
    y_remat, g_remat = _train_step(remat, x)
    # Stochastic paths are on: some samples must have lost a path, or the
    # test would not show that the masks are drawn once.
    assert not np.allclose(y_plain, _train_step_without_drop(block_type, module, plain, x))
    np.testing.assert_allclose(y_remat, y_plain, rtol=1e-5, atol=1e-6)
    assert len(g_remat) == len(g_plain)
    names = ["input"] + [v.path for v in plain.trainable_variables]
    for name, a, b in zip(names, g_plain, g_remat):
        scale = np.abs(a).max() + 1e-12
        np.testing.assert_allclose(b / scale, a / scale, atol=1e-5, err_msg=name)
    for a, b in zip(plain.non_trainable_variables, remat.non_trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def _train_step_without_drop(block_type, module, plain, x):
    twin = PolyInceptionModule(block_type, module, residual_scale=0.5, drop_path_rate=0.0,
                               width_multiplier=WIDTH, batch_norm={"momentum": MOMENTUM})
    twin.build((None, *SHAPES[block_type]))
    twin.set_weights(plain.get_weights())
    return keras.ops.convert_to_numpy(twin(x, training=True))


def test_moving_statistics_move_once_per_step():
    """Hand-computed: after one step from (0, 1), mean = (1 - momentum) * batch mean."""
    _, remat = _pair("A", "2way", drop_path_rate=0.0)
    x = _inputs("A")
    _train_step(remat, x)
    for block in remat.blocks:
        first = block.branches.ops[0]  # a 1x1 conv: a matrix product per pixel
        kernel = first.conv.kernel.numpy()[0, 0]
        conv = x.reshape(-1, x.shape[-1]).astype(np.float64) @ kernel
        norm = first.norms[0]
        np.testing.assert_allclose(norm.moving_mean.numpy(), (1 - MOMENTUM) * conv.mean(0),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(norm.moving_variance.numpy(),
                                   MOMENTUM + (1 - MOMENTUM) * conv.var(0), rtol=1e-4)


def test_the_backward_pass_recomputes_the_blocks(monkeypatch):
    calls = []
    original = InceptionResidualBlock.call

    def counting_call(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InceptionResidualBlock, "call", counting_call)
    plain, remat = _pair("B", "poly3[convs]")
    x = tf.constant(_inputs("B"))
    for layer, expected in ((plain, 3), (remat, 6)):
        calls.clear()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        assert len(calls) == 3  # forward: each order once (cascaded form)
        tape.gradient(loss, layer.trainable_variables)
        assert len(calls) == expected  # rematerialized: once more in the backward pass


def test_inference_is_unchanged_and_keeps_statistics():
    plain, remat = _pair("C", "poly3[convs]")
    x = _inputs("C")
    before = [v.numpy().copy() for v in remat.non_trainable_variables]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(remat(x, training=False)),
                                  keras.ops.convert_to_numpy(plain(x, training=False)))
    for a, b in zip(before, remat.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_the_option_survives_serialization():
    _, remat = _pair("A", "2way")
    serialized = keras.saving.serialize_keras_object(remat)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert clone.rematerialize is True
    assert clone.get_config() == remat.get_config()
    assert PolyInceptionModule("A").get_config()["rematerialize"] is False
