"""PolyNet(features_only=True): feature maps by level against the classifier's own layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import PolyNet
from polynet_tf.models import features
from tests.conftest import TINY_WIDTH

SPEC = "A: 2way | B: poly3[convs], 2way | C: poly3[convs]"


def _features(out_indices=None, **kwargs):
    kwargs.setdefault("width_multiplier", TINY_WIDTH)
    return PolyNet(SPEC, include_top=False, features_only=True, out_indices=out_indices,
                   **kwargs)


def _randomized_classifier(seed=0):
    """A tiny classifier whose BatchNorms and convs all hold random values."""
    model = PolyNet(SPEC, width_multiplier=TINY_WIDTH, classes=3, input_shape=(99, 99, 3))
    rng = np.random.RandomState(seed)
    model.set_weights([
        rng.uniform(0.5, 1.5, v.shape) if v.path.endswith("moving_variance")
        else rng.normal(0, 0.2, v.shape) for v in model.weights])
    return model


def _images(size, count=1, seed=0):
    return np.random.RandomState(seed).normal(0, 1, (count, size, size, 3)).astype("float32")


def test_sizes_channels_and_feature_info_at_any_size():
    model = _features()
    # Channels at width 1/16: conv3 64/16; mixed_4a 2 * 96/16; stages as in the hub tests.
    assert [(i.index, i.module, i.num_chs, i.reduction) for i in model.feature_info] == [
        (0, "stem/conv3", 4, 2), (1, "stem/mixed_4a", 12, 4), (2, "stage_a_0", 24, 8),
        (3, "stage_b_1", 72, 16), (4, "stage_c_0", 128, 32)]
    # 256: 127 -> 125 (conv3) -> 62 -> 60 (mixed_4a) -> 29 -> 14 -> 6; 331 as in docs.
    assert features.feature_sizes(256) == (125, 60, 29, 14, 6)
    assert features.feature_sizes(331) == (163, 79, 39, 19, 9)
    for size in (75, 256, 100):
        maps = model(_images(size))
        assert [tuple(m.shape) for m in maps] == [
            (1, side, side, info.num_chs)
            for side, info in zip(features.feature_sizes(size), model.feature_info)]


def test_maps_equal_the_classifier_layers_and_its_weights_file_loads(tmp_path):
    classifier = _randomized_classifier()
    path = str(tmp_path / "classifier.weights.h5")
    classifier.save_weights(path)
    model = _features(weights=path)
    # Same variables, under the same paths, as the classifier without its top.
    assert [v.path for v in model.weights] == [
        v.path for v in classifier.weights if not v.path.startswith("predictions/")]
    x = _images(99, count=2)
    # Called, not predict()ed: a traced predict function per model cost more than the checks.
    maps = [keras.ops.convert_to_numpy(m) for m in model(x)]
    stem = classifier.get_layer("stem")
    reference = x
    for part in stem.parts[:3]:  # conv1 to conv3, run one by one
        reference = part(reference, training=False)
    np.testing.assert_allclose(maps[0], reference, rtol=0, atol=1e-5)
    for part in stem.parts[3:5]:  # mixed 3a, 4a
        reference = part(reference, training=False)
    np.testing.assert_allclose(maps[1], reference, rtol=0, atol=1e-5)
    levels = ((2, "stage_a_0"), (3, "stage_b_1"), (4, "stage_c_0"))
    stages = keras.Model(classifier.input,
                         [classifier.get_layer(layer).output for _, layer in levels])(x)
    for (level, _), expected in zip(levels, stages):
        assert np.std(expected) > 0.05
        np.testing.assert_allclose(maps[level], expected, rtol=0, atol=1e-5)
    # A truncated model (no stage C, no reduction B) loads the same file.
    low = _features(out_indices=(-2, 1), weights=path)
    assert "reduction_b" not in [layer.name for layer in low.layers]
    low_maps = [keras.ops.convert_to_numpy(m) for m in low(x)]
    np.testing.assert_array_equal(low_maps[0], maps[1])
    np.testing.assert_array_equal(low_maps[1], maps[3])


def test_config_round_trip_keeps_the_levels():
    model = _features(out_indices=(0, 4), input_shape=(75, 75, 3))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = _images(75)
    for got, expected in zip(clone(x), model(x)):
        np.testing.assert_array_equal(got, expected)
    # The classifier's stem config is what it was before feature maps existed.
    assert "feature_parts" not in PolyNet(SPEC, width_multiplier=TINY_WIDTH).get_layer(
        "stem").get_config()


def test_rematerialized_stem_gives_the_same_gradients():
    x = _images(75, count=2)
    plain, remat = _features(seed=1), _features(seed=1, rematerialize=True)
    remat.set_weights(plain.get_weights())
    grads = []
    for model in (plain, remat):
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_sum(m * m) for m in model(x, training=True))
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b in zip(*grads):  # float32 sums in another order: relative to the scale
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("out_indices, size, message", [
    ((5,), None, r"Feature level 5 does not exist: PolyNet has levels 0-4"),
    ((-6,), None, r"Feature level -6 does not exist"),
    (("stage_c",), None, r"Feature level 'stage_c' does not exist"),
    ((1, 1), None, r"distinct levels"),
    ((4,), 74, r"too small for feature level 4: levels up to 4 need at least 75x75"),
    ((0, 3), 42, r"too small for feature level 3: levels up to 3 need at least 43x43"),
    ((1,), 26, r"levels up to 1 need at least 27x27"),
])
def test_clear_errors_for_levels_and_sizes(out_indices, size, message):
    shape = (size, size, 3) if size else None
    with pytest.raises(ValueError, match=message):
        _features(out_indices=out_indices, input_shape=shape)


def test_smallest_inputs_build_and_run():
    for levels, size in (((0, 1, 2), 27), ((3,), 43), ((4,), 75)):
        model = _features(out_indices=levels, input_shape=(size, size, 3))
        assert min(min(m.shape[1:3]) for m in model(_images(size))) == 1
    with pytest.raises(ValueError, match="needs include_top=False and pooling=None"):
        PolyNet(SPEC, features_only=True)
    with pytest.raises(ValueError, match="pass `features_only=True`"):
        PolyNet(SPEC, include_top=False, out_indices=(1,))


def test_feature_extractor_of_a_built_classifier_equals_the_feature_model():
    classifier = _randomized_classifier(seed=3)
    extractor = features.feature_extractor(classifier, out_indices=(0, 1, 4))
    model = _features(out_indices=(0, 1, 4))
    model.set_weights([w for w, v in zip(classifier.get_weights(), classifier.weights)
                       if not v.path.startswith("predictions/")])
    x = _images(99)
    for got, expected in zip(extractor(x), model(x)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert extractor.feature_info == model.feature_info
    with pytest.raises(ValueError, match="Feature level 7 does not exist"):
        features.feature_extractor(classifier, out_indices=(7,))


def test_inputs_too_small_at_run_time_are_named():
    from polynet_tf.layers.blocks import STEM_MIN_INPUT, ReductionA, ReductionB

    # The layers' own limits are the feature levels' smallest inputs.
    assert [features.min_input_size([level]) for level in (2, 3, 4)] == [
        STEM_MIN_INPUT, ReductionA.MIN_IMAGE_SIZE, ReductionB.MIN_IMAGE_SIZE]
    model = _features(out_indices=(3,))  # input size unknown until called
    with pytest.raises(ValueError, match=r"too small for layer 'reduction_a': its input map "
                                         r"is 2x2.*at least 43x43"):
        model.predict(_images(40), verbose=0)
    with pytest.raises(ValueError, match=r"too small for layer 'stem'.*at least 27x27"):
        model.predict(_images(20), verbose=0)
