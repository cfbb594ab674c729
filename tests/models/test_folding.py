"""fold_batch_norms: the inference network with BatchNorms folded into the convs."""

import keras
import numpy as np
import pytest

from polynet_tf.layers import ConvBN
from polynet_tf.models import PolyNet, fold_batch_norms, folding
from tests.grow.conftest import randomize_batch_norms
from tests.models.test_polynet import tiny


def _images(batch=3, size=75, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


def _conv_units(model):
    units = []
    for layer in model.layers:
        stack = [layer]
        while stack:
            current = stack.pop()
            if isinstance(current, ConvBN):
                units.append(current)
            stack.extend(v for v in vars(current).values() if isinstance(v, keras.layers.Layer))
    return units


@pytest.mark.parametrize("architecture", [
    "A: 2way | B: poly3[convs], 2way | C: poly3[convs]",   # the released modules
    "A: ir, poly2 | B: mpoly3 | C: 3way, poly2+ir",         # fully shared poly, mpoly, sums
])
def test_folded_network_computes_what_the_original_does_in_inference(architecture):
    # Logits, not probabilities: a softmax would hide differences.
    model = randomize_batch_norms(
        tiny(architecture, path_gates=True, classifier_activation=None), seed=3)
    folded = fold_batch_norms(model)
    x = _images()
    reference = model(x, training=False).numpy()
    assert np.max(np.abs(folded(x).numpy() - reference)) <= 1e-5 * np.std(reference)
    assert not any(isinstance(v, keras.layers.BatchNormalization)
                   for unit in _conv_units(folded) for v in vars(unit).values())
    assert len(_conv_units(folded)) == len(_conv_units(model)) > 0


def test_each_shared_conv_becomes_one_conv_per_batch_norm():
    model = tiny("A: ir | B: poly3[convs] | C: ir")
    folded = fold_batch_norms(model)
    units, folded_units = _conv_units(model), _conv_units(folded)
    assert [u.path for u in units] == [u.path for u in folded_units]
    for unit, folded_unit in zip(units, folded_units):
        assert len(folded_unit.folded_convs) == unit.num_norms
        assert all(c.use_bias for c in folded_unit.folded_convs)
    assert any(u.num_norms == 3 for u in units)
    extra_kernels = sum(int(np.prod(u.conv.kernel.shape)) * (u.num_norms - 1) for u in units)
    bn_channels = sum(u.num_norms * u.filters for u in units)
    # Per BatchNorm: one more kernel copy (after the first) and a bias instead
    # of gamma, beta, moving mean and variance.
    assert folded.count_params() == (model.count_params() + extra_kernels
                                     + bn_channels - 4 * bn_channels)
    assert not folded.non_trainable_weights


def test_features_without_top_and_pooling():
    model = randomize_batch_norms(
        tiny(include_top=False, pooling="avg", input_shape=(None, None, 3)))
    folded = fold_batch_norms(model)
    x = _images(batch=2, size=83)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_bfloat16_policy_computes_in_bfloat16_and_returns_float32():
    model = randomize_batch_norms(tiny("A: 2way | B: poly3[convs] | C: 2way",
                                       classifier_activation=None))
    folded = fold_batch_norms(model, dtype_policy="mixed_bfloat16")
    assert folded.get_layer("stage_b_0").dtype_policy.compute_dtype == "bfloat16"
    assert folded.get_layer("predictions").dtype_policy.name == "float32"
    x = _images(batch=4)
    logits = folded(x)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    reference = model(x, training=False).numpy()
    # bfloat16 keeps 8 bits of mantissa: close, not equal.
    assert np.max(np.abs(logits.numpy() - reference)) < 0.05 * np.std(reference) + 1e-3
    assert np.max(np.abs(logits.numpy() - reference)) > 0


def test_folded_model_saves_and_loads_in_safe_mode(tmp_path):
    folded = fold_batch_norms(randomize_batch_norms(tiny("A: 2way | B: poly3[convs] | C: ir")))
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(batch=2)
    np.testing.assert_array_equal(loaded(x).numpy(), folded(x).numpy())


def test_folding_twice_is_an_error():
    model = tiny()
    folded = fold_batch_norms(model)
    assert not folding.is_folded(model) and folding.is_folded(folded)
    assert folding.has_batch_norms_to_fold(model) and not folding.has_batch_norms_to_fold(folded)
    with pytest.raises(ValueError, match="already folded"):
        fold_batch_norms(folded)


def test_weights_without_a_counterpart_are_named():
    smaller = fold_batch_norms(tiny("A: ir | B: ir | C: ir"))
    bigger = tiny("A: ir, ir | B: ir | C: ir")
    with pytest.raises(ValueError, match="conv units .* differ"):
        folding._assign_folded_weights(bigger, smaller)


@pytest.mark.slow
def test_released_network_folds_exactly_at_full_width():
    model = randomize_batch_norms(PolyNet(classifier_activation=None, input_shape=(139, 139, 3)))
    folded = fold_batch_norms(model)
    x = _images(batch=1, size=139)
    reference = model(x, training=False).numpy()
    assert np.max(np.abs(folded(x).numpy() - reference)) <= 1e-4 * np.std(reference)
    # Stage B and C poly-3 blocks hold each shared conv three times.
    assert folded.count_params() > model.count_params()
