"""pyramid_outputs P2-P5 on keras-hub's grids; keras-hub's detection and segmentation heads."""

import keras
import keras_hub
import numpy as np
import pytest

from polynet_tf import PolyNet
from polynet_tf.hub import PolyNetBackbone
from polynet_tf.hub.pyramid import first_cell_centre, grid_offset
from tests.conftest import TINY_WIDTH
from tests.hub.conftest import randomize

SPEC = "A: 2way | B: 2way | C: 2way"
SIZE = 256


def _images(size=SIZE, count=1, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def test_offsets_follow_the_unpadded_windows():
    # First cell centres by hand: conv1 (3x3/2) 1.5, conv2 3.5, mixed 3a 5.5, mixed 4a 9.5,
    # mixed 5a 13.5, reduction A 21.5, reduction B 37.5; nearest anchors (k * stride):
    # 8 = 2 * 4, 16 = 2 * 8, 16 = 1 * 16, 32 = 1 * 32.
    assert [first_cell_centre(level) for level in (1, 2, 3, 4)] == [9.5, 13.5, 21.5, 37.5]
    assert [grid_offset(level) for level in (1, 2, 3, 4)] == [2, 2, 1, 1]


@pytest.fixture(scope="module")
def backbone_and_reference():
    """A randomized backbone and the feature model with its weights (both take any size)."""
    backbone = PolyNetBackbone(SPEC, width_multiplier=TINY_WIDTH)
    randomize(backbone, seed=4)
    reference = PolyNet(SPEC, include_top=False, features_only=True, out_indices=(1, 2, 3, 4),
                        width_multiplier=TINY_WIDTH)
    reference.set_weights(backbone.get_weights())
    return backbone, reference


@pytest.mark.parametrize("size", [256, 100])
def test_pyramid_maps_are_the_feature_maps_padded_onto_the_grid(backbone_and_reference, size):
    backbone, reference = backbone_and_reference
    x = _images(size)
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)(x)
    raw = reference(x)
    assert list(pyramid) == ["P2", "P3", "P4", "P5"]
    for (key, aligned), level_map, offset in zip(pyramid.items(), raw, (2, 2, 1, 1)):
        stride = 2 ** int(key[1])
        side = -(-size // stride)  # keras-hub's grid: ceil(size / stride)
        assert tuple(aligned.shape) == (1, side, side, level_map.shape[-1])
        after = side - level_map.shape[1] - offset
        expected = np.pad(level_map, ((0, 0), (offset, after), (offset, after), (0, 0)))
        np.testing.assert_array_equal(aligned, expected)
    # The backbone's output is still the unpadded stage-C map.
    np.testing.assert_array_equal(backbone(x), raw[-1])


# The heads' tests run their one step and prediction eagerly: RetinaNet's train
# step traced into a graph cost 16 s of CPU (eagerly 2 s), at 256 or 128 pixels
# alike. Graph-mode fitting through keras-hub's task API is tests/hub/test_fit.py's.
def test_retinanet_trains_one_step_and_predicts():
    encoder = PolyNetBackbone(SPEC, width_multiplier=TINY_WIDTH, image_shape=(SIZE, SIZE, 3))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=False,
        image_shape=(SIZE, SIZE, 3))
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx",
        pre_logits_num_conv_layers=1)
    detector.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
    boxes = np.array([[[30, 40, 120, 160], [0, 0, 0, 0]]], "float32")
    labels = np.array([[1, -1]], "float32")  # one box; -1 pads
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    history = detector.fit(_images(), {"boxes": boxes, "labels": labels}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The step reached PolyNet's stem through P3's alignment.
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before, encoder.trainable_weights)]
    assert all(changed)
    predictions = detector.predict(_images(seed=1), verbose=0)
    assert predictions["boxes"].shape == (1, 100, 4)
    assert predictions["labels"].shape == (1, 100)


def test_deeplab_v3_plus_trains_one_step_and_predicts():
    encoder = PolyNetBackbone(SPEC, width_multiplier=TINY_WIDTH)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[1, 2], low_level_feature_key="P2", projection_filters=8,
        image_shape=(SIZE, SIZE, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    segmenter.compile(optimizer=keras.optimizers.SGD(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)
    masks = np.random.RandomState(2).randint(0, 3, (1, SIZE, SIZE, 1))
    stem_kernel = encoder.get_layer("stem").weights[0].numpy().copy()
    history = segmenter.fit(_images(), masks, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(stem_kernel, encoder.get_layer("stem").weights[0].numpy())
    assert segmenter.predict(_images(seed=1), verbose=0).shape == (1, SIZE, SIZE, 3)


def test_pyramid_model_saves_and_loads(backbone_and_reference, tmp_path):
    backbone, _ = backbone_and_reference
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    path = str(tmp_path / "pyramid.keras")
    pyramid.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(128)
    expected = pyramid(x)
    for key, value in loaded(x).items():
        np.testing.assert_array_equal(value, expected[key])
