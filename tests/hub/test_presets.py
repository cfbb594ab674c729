"""PolyNet presets through keras-hub's own loaders: round trips, URIs and clear errors."""

import json
import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import InputContract
from polynet_tf.hub import (
    PolyNetBackbone,
    PolyNetImageClassifier,
    PolyNetImageClassifierPreprocessor,
    PolyNetImageConverter,
    PresetError,
)
from tests.conftest import TINY_WIDTH
from tests.hub.conftest import raw_images, tiny_classifier


@pytest.fixture(scope="module")
def classifier():
    """One tiny classifier (3 classes) for the module's tests: they save it, never change it."""
    return tiny_classifier(num_classes=3)


@pytest.fixture
def saved_classifier(classifier, tmp_path):
    preset = str(tmp_path / "tiny_preset")
    classifier.save_to_preset(preset)
    return classifier, preset


def test_classifier_preset_round_trip_through_keras_hub(saved_classifier):
    classifier, preset = saved_classifier
    assert sorted(os.listdir(preset)) == [
        "config.json", "image_converter.json", "metadata.json", "model.weights.h5",
        "preprocessor.json", "task.json", "task.weights.h5"]
    # keras-hub's base classes find the PolyNet classes from the files alone.
    loaded = keras_hub.models.ImageClassifier.from_preset(preset)
    assert isinstance(loaded, PolyNetImageClassifier)
    assert isinstance(loaded.preprocessor, PolyNetImageClassifierPreprocessor)
    converter = loaded.preprocessor.image_converter
    assert isinstance(converter, PolyNetImageConverter)
    assert converter.get_config() == classifier.preprocessor.image_converter.get_config()
    assert converter.input_contract == InputContract("squash", 75, resize_size=86)
    assert converter.image_size == (75, 75)
    assert loaded.backbone.get_config() == classifier.backbone.get_config()
    for a, b in zip(loaded.weights, classifier.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images = raw_images()
    expected = classifier.predict(images, verbose=0)
    assert np.std(expected) > 0.1
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    backbone = keras_hub.models.Backbone.from_preset(preset)
    assert isinstance(backbone, PolyNetBackbone)


def test_backbone_preset_holds_a_default_converter(classifier, tmp_path):
    preset = str(tmp_path / "backbone_only")
    classifier.backbone.save_to_preset(preset)
    assert not os.path.exists(os.path.join(preset, "task.json"))
    backbone = PolyNetBackbone.from_preset(preset)
    x = np.random.RandomState(0).normal(0, 1, (1, 75, 75, 3)).astype("float32")
    np.testing.assert_array_equal(backbone(x).numpy(), classifier.backbone(x).numpy())
    # A new head on the saved backbone; the spec's default input is 299.
    new = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=2)
    assert isinstance(new, PolyNetImageClassifier) and new.num_classes == 2
    assert new.preprocessor.image_converter.image_size == (299, 299)
    assert new.preprocessor.image_converter.input_contract == InputContract("single", 299)
    # Called on its preprocessor's output (no traced predict function; the round
    # trip above predicts through a loaded preset's preprocessor).
    assert tuple(new(new.preprocessor(raw_images(count=1))).shape) == (1, 2)


def test_save_to_uri_then_load_from_uri(classifier, tmp_path, monkeypatch):
    # keras-hub copies a URI preset into $KERAS_HOME/models before loading it.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    uri = "ram://hub_tests/presets/tiny"
    classifier.save_to_preset(uri)
    assert sorted(tf.io.gfile.listdir(uri)) == sorted(
        ["config.json", "image_converter.json", "metadata.json", "model.weights.h5",
         "preprocessor.json", "task.json", "task.weights.h5"])
    assert not [n for n in tf.io.gfile.listdir("ram://hub_tests/presets") if n.startswith(".tmp")]
    loaded = PolyNetImageClassifier.from_preset(uri)
    images = raw_images(count=1)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  classifier.predict(images, verbose=0))


def test_save_replaces_a_preset_but_not_other_folders(tmp_path, saved_classifier):
    classifier, preset = saved_classifier
    classifier.backbone.save_to_preset(preset)  # A backbone over a task preset:
    assert not os.path.exists(os.path.join(preset, "task.json"))  # no stale task left.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a keras-hub preset"):
        classifier.save_to_preset(str(other))
    assert os.listdir(other) == ["keep.txt"]


def test_preset_of_another_architecture_is_refused(tmp_path):
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3))
    preset = str(tmp_path / "resnet")
    resnet.save_to_preset(preset)
    for cls in (PolyNetBackbone, PolyNetImageClassifier):
        with pytest.raises(PresetError, match=r"holds a 'keras_hub>ResNetBackbone' backbone, "
                                              r"not a PolyNetBackbone"):
            cls.from_preset(preset)


def _edit_json(path, edit):
    with open(path) as stream:
        config = json.load(stream)
    edit(config)
    with open(path, "w") as stream:
        json.dump(config, stream)


def test_damaged_presets_give_clear_errors(saved_classifier):
    _, preset = saved_classifier
    config_path = os.path.join(preset, "config.json")
    weights_path = os.path.join(preset, "model.weights.h5")
    good_config = open(config_path).read()

    # A config describing a deeper network than the weights: the first missing
    # weight is named, also through keras-hub's base loader.
    _edit_json(config_path, lambda c: c["config"].update(
        architecture="A: 2way*2 | B: poly3[convs], 2way | C: poly3[convs]"))
    for load in (PolyNetBackbone.from_preset, keras_hub.models.Backbone.from_preset):
        with pytest.raises(PresetError,
                           match=r"does not fit this model.*First difference.*save_to_preset"):
            load(preset)
    # ... and a shallower one (Keras alone would load it, ignoring the rest).
    _edit_json(config_path, lambda c: c["config"].update(
        architecture="A: 2way | B: poly3[convs] | C: poly3[convs]"))
    with pytest.raises(PresetError, match=r"does not fit this model.*92 unexpected"):
        keras_hub.models.Backbone.from_preset(preset)

    with open(config_path, "w") as stream:
        stream.write(good_config[:40])
    with pytest.raises(PresetError, match="is not valid JSON"):
        PolyNetImageClassifier.from_preset(preset)

    os.remove(config_path)
    with pytest.raises(PresetError, match="has no config.json"):
        PolyNetBackbone.from_preset(preset)

    with open(config_path, "w") as stream:
        stream.write(good_config)
    with open(weights_path, "rb") as stream:
        head = stream.read(4096)
    with open(weights_path, "wb") as stream:
        stream.write(head)
    with pytest.raises(PresetError, match="truncated or corrupt"):
        PolyNetBackbone.from_preset(preset)

    with pytest.raises(PresetError, match="does not exist"):
        PolyNetBackbone.from_preset(preset + "_missing")


def test_converter_rejects_bad_crop_fraction():
    with pytest.raises(ValueError, match=r"`crop_fraction` must be in \(0, 1\]"):
        PolyNetImageConverter(crop_fraction=1.5)
    assert PolyNetBackbone(
        "A: ir | B: ir | C: ir", width_multiplier=TINY_WIDTH).default_image_size == 299
