"""PolyInceptionModule: cascaded computation, sharing, stochastic paths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.layers import InceptionResidualBlock, PolyInceptionModule

WIDTH = 0.0625
SHAPES = {"A": (9, 9, 24), "B": (5, 5, 72), "C": (3, 3, 128)}


def _module(block_type="B", module="poly2", **kwargs):
    layer = PolyInceptionModule(block_type, module, width_multiplier=WIDTH,
                                residual_scale=0.3, **kwargs)
    layer.build((None, *SHAPES[block_type]))
    return layer


def _inputs(block_type="B", batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *SHAPES[block_type])).astype("float32")


def _block_params(layer):
    return sum(block.count_params() for block in layer.blocks)


@pytest.fixture
def block_calls(monkeypatch):
    """Counts evaluations of InceptionResidualBlock.call (the real call runs)."""
    calls = []
    original = InceptionResidualBlock.call

    def counting_call(self, *args, **kwargs):
        calls.append((self.name, kwargs.get("application", 0)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InceptionResidualBlock, "call", counting_call)
    return calls


@pytest.mark.parametrize(
    "module, evaluations, distinct_blocks",
    [("ir", 1, 1), ("2way", 2, 2), ("3way", 3, 3), ("poly2", 2, 1), ("poly3", 3, 1),
     ("poly3[convs]", 3, 1), ("mpoly2", 2, 2), ("mpoly3", 3, 3), ("poly2+2way", 4, 3)],
)
def test_each_block_runs_once_per_order(block_calls, module, evaluations, distinct_blocks):
    layer = _module(module=module)
    layer(_inputs(), training=False)
    assert len(block_calls) == evaluations
    assert len({name for name, _ in block_calls}) == distinct_blocks
    assert layer.num_paths == evaluations


def test_poly3_has_a_third_of_mpoly3_block_parameters():
    poly3, mpoly3 = _module(module="poly3"), _module(module="mpoly3")
    assert 3 * _block_params(poly3) == _block_params(mpoly3)
    assert len(poly3.blocks) == 1 and len(mpoly3.blocks) == 3


def test_released_poly3_shares_convs_but_not_norms_or_projections():
    layer = _module(module="poly3[convs]")
    (block,) = layer.blocks
    assert block.num_applications == 3
    conv_units = [op for op in block.branches.ops]
    assert all(len(unit.norms) == 3 for unit in conv_units)
    assert len(block.projections) == 3
    single = _module(module="ir").blocks[0]
    conv_params = sum(unit.conv.count_params() for unit in single.branches.ops)
    norm_params = sum(norm.count_params() for unit in single.branches.ops for norm in unit.norms)
    projection_params = single.projections[0].count_params()
    assert block.count_params() == conv_params + 3 * norm_params + 3 * projection_params


def _reference(layer, x, training):
    """The module's polynomial, written out term by term from its blocks."""
    beta = layer.residual_scale
    relu = keras.ops.relu
    blocks = layer.blocks
    spec = str(layer.spec)

    def f(i, h, application=0):
        return blocks[i](h, application=application, training=training)

    if spec == "2way":
        total = x + beta * f(0, x) + beta * f(1, x)
    elif spec == "poly2":  # I + F + F^2, F shared
        first = f(0, x)
        total = x + beta * first + beta * f(0, relu(first))
    elif spec == "poly3[convs]":  # shared convs, application-specific BN/projection
        h1 = f(0, x, 0)
        h2 = f(0, relu(h1), 1)
        h3 = f(0, relu(h2), 2)
        total = x + beta * (h1 + h2 + h3)
    elif spec == "mpoly3":  # I + F + GF + HGF
        h1 = f(0, x)
        h2 = f(1, relu(h1))
        h3 = f(2, relu(h2))
        total = x + beta * h1 + beta * h2 + beta * h3
    else:
        raise AssertionError(spec)
    return keras.ops.convert_to_numpy(relu(total))


@pytest.mark.parametrize("module", ["2way", "poly2", "poly3[convs]", "mpoly3"])
@pytest.mark.parametrize("training", [False, True])
def test_cascade_equals_the_polynomial_written_out(module, training):
    layer = _module(module=module)
    x = _inputs()
    expected = _reference(layer, x, training)
    actual = keras.ops.convert_to_numpy(layer(x, training=training))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_rate_zero_in_training_is_identical_to_no_stochastic_paths():
    layer = _module(module="mpoly3", drop_path_rate=0.0)
    x = _inputs()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, training=True)), _reference(layer, x, True)
    )


def test_inference_ignores_stochastic_paths():
    layer = _module(module="mpoly3", drop_path_rate=0.0)
    x = _inputs()
    clean = keras.ops.convert_to_numpy(layer(x, training=False))
    layer.set_drop_path_rate(0.9)
    for _ in range(3):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), clean)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_measured_drop_frequency_per_path_matches_the_rate(rate):
    layer = _module(module="poly3", drop_path_rate=rate, seed=7)
    x = np.zeros((20000, 1, 1, 1), "float32")
    scales = np.concatenate(
        [keras.ops.convert_to_numpy(s).reshape(-1, 1) for s in layer._path_scales(x, True)],
        axis=1,
    )
    assert scales.shape == (20000, 3)
    kept_value = 0.3 / (1.0 - rate)
    values = np.unique(scales)
    assert values.tolist() == pytest.approx([0.0, kept_value], rel=1e-6)
    dropped = (scales == 0).mean(axis=0)
    # 20000 Bernoulli draws per path: 4.5 standard deviations is about 0.016.
    np.testing.assert_allclose(dropped, rate, atol=0.016)
    # Paths are dropped independently of each other.
    both = ((scales[:, 0] == 0) & (scales[:, 1] == 0)).mean()
    assert abs(both - rate * rate) < 0.016


def test_dropped_samples_keep_only_the_identity_path():
    layer = _module(module="ir", drop_path_rate=0.5, seed=3)
    x = _inputs(batch=64)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    identity = np.maximum(x, 0)
    residual = keras.ops.convert_to_numpy(layer.blocks[0](x, training=True))
    kept = np.maximum(x + 0.3 / 0.5 * residual, 0)
    is_dropped = np.all(np.isclose(out, identity, atol=1e-6), axis=(1, 2, 3))
    is_kept = np.all(np.isclose(out, kept, atol=1e-5), axis=(1, 2, 3))
    assert np.all(is_dropped ^ is_kept)
    assert 16 <= is_dropped.sum() <= 48


def test_rate_change_takes_effect_in_a_traced_step_without_retracing():
    layer = _module(module="2way", drop_path_rate=0.0, seed=5)
    x = tf.constant(_inputs(batch=32))
    traces = []

    @tf.function
    def step(inputs):
        traces.append(1)
        return layer(inputs, training=True)

    before = step(x).numpy()
    np.testing.assert_array_equal(before, _reference(layer, x, True))
    layer.set_drop_path_rate(0.6)
    after = step(x).numpy()
    assert len(traces) == 1
    assert not np.allclose(before, after)
    assert layer.drop_path_rate == pytest.approx(0.6)
    assert layer.get_config()["drop_path_rate"] == pytest.approx(0.6)


def test_rate_is_not_a_weight():
    layer = _module(module="poly3[convs]", drop_path_rate=0.2)
    names = [w.path for w in layer.weights]
    assert not any("drop_path" in name for name in names)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_bad_rates_are_rejected(rate):
    with pytest.raises(ValueError, match=r"drop_path_rate.*\[0, 1\)"):
        PolyInceptionModule("A", "2way", drop_path_rate=rate)
    layer = _module(module="2way")
    with pytest.raises(ValueError, match=r"drop_path_rate"):
        layer.set_drop_path_rate(rate)


def test_bad_block_type_is_rejected():
    with pytest.raises(ValueError, match="block_type.*'D'"):
        PolyInceptionModule("D", "2way")


def test_path_gates_scale_each_path_and_learn_from_zero():
    layer = _module(module="poly2", path_gates=True)
    assert layer.count_params() == _block_params(layer) + 2
    x = _inputs()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)),
                               _reference(layer, x, False), rtol=1e-6, atol=1e-6)
    # The second-order path closed: I + F only, though F is shared with F^2.
    layer.gates.assign([1.0, 0.0])
    first_order = np.maximum(
        x + 0.3 * keras.ops.convert_to_numpy(layer.blocks[0](x, training=False)), 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)),
                               first_order, rtol=1e-5, atol=1e-5)
    # A closed gate still receives a gradient, so training can open it.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(x), training=False))
    gradient = tape.gradient(loss, layer.gates.value)
    assert gradient.numpy()[1] != 0.0
