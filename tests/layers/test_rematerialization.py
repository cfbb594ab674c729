"""rematerialize=True (PolyInceptionModule, Stem, reductions): same gradients and statistics."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.layers import (
    ConvBN,
    InceptionResidualBlock,
    PolyInceptionModule,
    ReductionA,
    ReductionB,
    Stem,
)
from polynet_tf.layers.batch_norm import statistics_frozen
from polynet_tf.layers.blocks import STEM_REMAT_SEGMENTS

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


# The stem and the reductions, a little wider than the modules above so that
# every unit has a few channels; the stem gets the smallest input it takes.
FIXED_WIDTH = 0.125
FIXED_SHAPES = {Stem: (75, 75, 3), ReductionA: (11, 11, 48), ReductionB: (7, 7, 144)}


def _fixed_pair(layer_class):
    """A plain and a rematerialized stem / reduction with the same weights."""
    layers = []
    for rematerialize in (False, True):
        layer = layer_class(width_multiplier=FIXED_WIDTH, batch_norm={"momentum": MOMENTUM},
                            rematerialize=rematerialize)
        layer.build((None, *FIXED_SHAPES[layer_class]))
        layers.append(layer)
    layers[1].set_weights(layers[0].get_weights())
    return layers


def _fixed_inputs(layer_class, batch=4):
    shape = (batch, *FIXED_SHAPES[layer_class])
    return np.random.default_rng(3).normal(size=shape).astype("float32")


def _units(layer):
    """The ConvBN units of a stem or reduction, each with the index of its stem part."""
    if isinstance(layer, Stem):
        return [(unit, index) for index, part in enumerate(layer.parts)
                for unit in ([part] if isinstance(part, ConvBN) else part.ops)
                if isinstance(unit, ConvBN)]
    return [(unit, 0) for unit in layer.ops if isinstance(unit, ConvBN)]


@pytest.mark.parametrize("layer_class", [Stem, ReductionA, ReductionB])
def test_stem_and_reduction_gradients_and_statistics_equal_the_plain_layer(layer_class):
    plain, remat = _fixed_pair(layer_class)
    x = _fixed_inputs(layer_class)
    y_plain, g_plain = _train_step(plain, x)
    y_remat, g_remat = _train_step(remat, x)
    np.testing.assert_allclose(y_remat, y_plain, rtol=1e-5, atol=1e-6)
    assert len(g_remat) == len(g_plain) == 1 + len(plain.trainable_variables)
    names = ["input"] + [v.path for v in plain.trainable_variables]
    for name, a, b in zip(names, g_plain, g_remat):
        assert np.abs(a).max() > 0, name  # every gradient reaches its weights
        scale = np.abs(a).max()
        np.testing.assert_allclose(b / scale, a / scale, atol=1e-5, err_msg=name)
    for a, b in zip(plain.non_trainable_variables, remat.non_trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    # Moved once from (0, 1): the units fed by the layer's input, by hand.
    first_units = [remat.parts[0]] if layer_class is Stem else [
        remat.ops[start] for start, _ in remat._branch_slices
        if isinstance(remat.ops[start], ConvBN)]
    for unit in first_units:
        conv = keras.ops.convert_to_numpy(unit.conv(x)).astype(np.float64)
        conv = conv.reshape(-1, conv.shape[-1])
        norm = unit.norms[0]
        np.testing.assert_allclose(norm.moving_mean.numpy(), (1 - MOMENTUM) * conv.mean(0),
                                   rtol=1e-4, atol=1e-6, err_msg=norm.path)
        np.testing.assert_allclose(norm.moving_variance.numpy(),
                                   MOMENTUM + (1 - MOMENTUM) * conv.var(0), rtol=1e-4,
                                   err_msg=norm.path)


def _recorded_unit_calls(monkeypatch, layer, x):
    """(unit, statistics frozen?) of every ConvBN call in one forward and backward pass."""
    calls = []
    original = ConvBN.call

    def recording_call(self, *args, **kwargs):
        calls.append((self, statistics_frozen()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ConvBN, "call", recording_call)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(x), training=True))
    forward = list(calls)
    tape.gradient(loss, layer.trainable_variables)
    return forward, calls[len(forward):]


def _distinct_runs(values):
    """`values` with consecutive repeats removed: [0, 0, 1, 0] -> [0, 1, 0]."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def test_the_backward_pass_recomputes_the_stem_segment_by_segment(monkeypatch):
    plain, remat = _fixed_pair(Stem)
    x = _fixed_inputs(Stem)
    part_of = {id(unit): index for unit, index in _units(remat)}
    assert sorted(set(part_of.values())) == list(range(6))

    forward, backward = _recorded_unit_calls(monkeypatch, plain, x)
    assert len(forward) == len(part_of) and backward == []

    forward, backward = _recorded_unit_calls(monkeypatch, remat, x)
    # Forward: every unit once, in order, statistics updated.
    assert [id(unit) for unit, _ in forward] == [id(unit) for unit, _ in _units(remat)]
    assert not any(frozen for _, frozen in forward)
    # Backward: every unit once more, statistics frozen, segment by segment
    # from the top one, each segment's parts in forward order.
    assert sorted(id(unit) for unit, _ in backward) == sorted(part_of)
    assert all(frozen for _, frozen in backward)
    assert _distinct_runs([part_of[id(unit)] for unit, _ in backward]) == [
        index for start, stop in reversed(STEM_REMAT_SEGMENTS) for index in range(start, stop)]
    # Four segments, none larger than mixed_4a alone (see STEM_REMAT_SEGMENTS).
    assert STEM_REMAT_SEGMENTS == ((0, 2), (2, 4), (4, 5), (5, 6))


@pytest.mark.parametrize("layer_class", [ReductionA, ReductionB])
def test_the_backward_pass_recomputes_the_reductions(monkeypatch, layer_class):
    _, remat = _fixed_pair(layer_class)
    forward, backward = _recorded_unit_calls(monkeypatch, remat, _fixed_inputs(layer_class))
    units = [id(unit) for unit, _ in _units(remat)]
    assert [id(unit) for unit, _ in forward] == units
    assert not any(frozen for _, frozen in forward)
    assert [id(unit) for unit, _ in backward] == units  # one segment, recomputed once
    assert all(frozen for _, frozen in backward)


@pytest.mark.parametrize("layer_class", [Stem, ReductionA, ReductionB])
def test_stem_and_reduction_inference_is_unchanged_and_keeps_statistics(layer_class):
    plain, remat = _fixed_pair(layer_class)
    x = _fixed_inputs(layer_class)
    before = [v.numpy().copy() for v in remat.non_trainable_variables]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(remat(x, training=False)),
                                  keras.ops.convert_to_numpy(plain(x, training=False)))
    for a, b in zip(before, remat.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("layer_class", [Stem, ReductionA, ReductionB])
def test_the_stem_and_reduction_option_survives_serialization(layer_class):
    _, remat = _fixed_pair(layer_class)
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(remat)))
    assert serialized["config"]["rematerialize"] is True
    clone = keras.saving.deserialize_keras_object(serialized)
    assert clone.rematerialize is True
    assert clone.get_config() == remat.get_config()
    assert layer_class().get_config()["rematerialize"] is False
    # A config saved before the option existed loads, without it.
    del serialized["config"]["rematerialize"]
    assert keras.saving.deserialize_keras_object(serialized).rematerialize is False
