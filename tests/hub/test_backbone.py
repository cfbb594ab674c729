"""PolyNetBackbone / PolyNetImageClassifier against the package's own PolyNet() builder."""

import keras
import keras_hub
import numpy as np
import pytest

from polynet_tf import PolyNet
from polynet_tf.hub import PolyNetBackbone, PolyNetImageClassifier, from_polynet, to_polynet
from tests.conftest import TINY_WIDTH
from tests.hub.conftest import TINY_SIZE, TINY_SPEC, randomize


def _inputs(size=TINY_SIZE, count=2, seed=0):
    return np.random.RandomState(seed).normal(0, 1, (count, size, size, 3)).astype("float32")


def test_feature_maps_have_the_documented_shapes(tiny_backbone):
    # Channels at width 1/16 (scale_channels rounds each branch): stem and stage A
    # 2*6 + 12 = 24; stage B 2*24 + 24 = 72; stage C 16 + 16 + 24 + 72 = 128.
    # Sizes: 75 -> 37 -> 35 -> 17 -> 15 -> 7 (stem, A) -> 3 (B) -> 1 (C);
    # 99 -> 49 -> 47 -> 23 -> 21 -> 10 -> 4 -> 1.
    assert isinstance(tiny_backbone, keras_hub.models.FeaturePyramidBackbone)
    # P2-P5, on keras-hub's grids (tests/hub/test_pyramid.py); the output is stage C, unpadded.
    assert list(tiny_backbone.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    assert tiny_backbone.stage_outputs["stage_c"] is tiny_backbone.output
    features = keras.Model(tiny_backbone.input, tiny_backbone.stage_outputs)
    for size, (stem, stage_b) in {75: (7, 3), 99: (10, 4)}.items():
        maps = features(_inputs(size))
        assert {name: tuple(value.shape) for name, value in maps.items()} == {
            "stem": (2, stem, stem, 24), "stage_a": (2, stem, stem, 24),
            "stage_b": (2, stage_b, stage_b, 72), "stage_c": (2, 1, 1, 128)}


def test_full_width_feature_maps_at_331():
    # The table of docs/keras_hub.md, on the cheapest full-width network.
    backbone = PolyNetBackbone("A: ir | B: ir | C: ir", image_shape=(331, 331, 3))
    shapes = {name: tuple(t.shape) for name, t in backbone.stage_outputs.items()}
    assert shapes == {"stem": (None, 39, 39, 384), "stage_a": (None, 39, 39, 384),
                      "stage_b": (None, 19, 19, 1152), "stage_c": (None, 9, 9, 2048)}
    # Padded onto ceil(331 / 2^n) cells.
    assert {k: tuple(t.shape) for k, t in backbone.pyramid_outputs.items()} == {
        "P2": (None, 83, 83, 192), "P3": (None, 42, 42, 384), "P4": (None, 21, 21, 1152),
        "P5": (None, 11, 11, 2048)}


def test_classifier_equals_polynet_with_the_same_weights(tiny_backbone):
    classifier = PolyNetImageClassifier(tiny_backbone, num_classes=5)
    reference = PolyNet(TINY_SPEC, width_multiplier=TINY_WIDTH, classes=5,
                        classifier_activation=None, input_shape=(TINY_SIZE, TINY_SIZE, 3))
    # One to one: same variables, in the same order, under the same layer paths.
    assert [(v.path, tuple(v.shape)) for v in classifier.weights] == [
        (v.path, tuple(v.shape)) for v in reference.weights]
    assert classifier.count_params() == reference.count_params()
    randomize(reference, seed=1)
    classifier.set_weights(reference.get_weights())
    x = _inputs()
    # The reference is called: a traced predict function costs more than the check.
    expected = keras.ops.convert_to_numpy(reference(x))
    got = classifier.predict(x, verbose=0)
    assert np.std(expected) > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_to_polynet_and_back_compute_the_same_function():
    classifier = PolyNetImageClassifier(
        PolyNetBackbone(TINY_SPEC, width_multiplier=TINY_WIDTH, residual_scale=0.5),
        num_classes=4, activation="softmax")
    randomize(classifier, seed=2)
    x = _inputs(seed=1)
    polynet = to_polynet(classifier)
    assert polynet.get_layer("predictions").units == 4
    assert polynet.get_layer("dropout").rate == 0.2
    expected = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(polynet(x)), expected,
                               rtol=0, atol=1e-6)
    back = from_polynet(polynet, TINY_SPEC, width_multiplier=TINY_WIDTH, residual_scale=0.5)
    assert isinstance(back, PolyNetImageClassifier) and back.activation == "softmax"
    np.testing.assert_array_equal(back.predict(x, verbose=0), expected)
    # Options that describe another network are refused, naming the layer.
    with pytest.raises(ValueError, match=r"stage_a_0.*residual_scale"):
        from_polynet(polynet, TINY_SPEC, width_multiplier=TINY_WIDTH)
    with pytest.raises(ValueError, match="exist on one side only"):
        from_polynet(polynet, "A: 2way | B: 2way | C: poly3[convs]",
                     width_multiplier=TINY_WIDTH, residual_scale=0.5)


def test_backbone_config_round_trip_and_errors(tiny_backbone):
    config = tiny_backbone.get_config()
    assert config["architecture"] == TINY_SPEC and config["width_multiplier"] == TINY_WIDTH
    clone = PolyNetBackbone.from_config(config)
    assert clone.get_config() == config
    with pytest.raises(ValueError, match="must be a `polynet_tf.hub.PolyNetBackbone`"):
        PolyNetImageClassifier(keras.Sequential([keras.Input((4, 4, 3))]), num_classes=2)
    with pytest.raises(ValueError, match="Unknown architecture 'nope'"):
        PolyNetBackbone("nope")
    with pytest.raises(ValueError, match="at least 75x75"):
        PolyNetBackbone(TINY_SPEC, image_shape=(32, 32, 3), width_multiplier=TINY_WIDTH)


def test_dtype_policy_reaches_every_layer_and_the_config():
    backbone = PolyNetBackbone("A: ir | B: ir | C: ir", width_multiplier=TINY_WIDTH,
                               dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert {layer.dtype_policy.name for layer in backbone.layers if layer.weights} == {
        "mixed_bfloat16"}
    clone = PolyNetBackbone.from_config(backbone.get_config())
    assert clone.get_layer("stage_c_0").dtype_policy.name == "mixed_bfloat16"
