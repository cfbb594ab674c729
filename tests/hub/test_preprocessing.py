"""PolyNetImageConverter against the package's own evaluation preprocessing."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import protocols
from polynet_tf.data.normalization import normalize_image
from polynet_tf.data import InputContract
from polynet_tf.data.preprocessing import preprocess_for_eval, squash_center_crop
from polynet_tf.hub import PolyNetImageClassifierPreprocessor, PolyNetImageConverter


def _image(height, width, seed=0):
    # Smooth content plus noise: resizing differences show, but stay small.
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 127 + 100 * np.sin(x[..., None] / 7.0 + y[..., None] / 11.0 + np.arange(3))
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype("uint8")


def test_default_is_the_published_squash_contract():
    converter = PolyNetImageConverter()
    # The published 81.00 / 95.62: the whole image squashed to 378x378, centre 331.
    assert converter.input_contract == InputContract("squash", 331, resize_size=378)
    assert converter.image_size == (331, 331) and converter.crop_fraction is None
    assert converter.antialias and converter.interpolation == "bilinear"
    pixels = np.array([[[[0, 128, 255]]]], dtype="float32")
    # x * scale + offset is the released (x / 255 - mean) / std.
    expected = normalize_image(pixels).numpy()
    got = pixels * np.array(converter.scale) + np.array(converter.offset)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    image = _image(300, 410)
    expected = squash_center_crop(tf.io.encode_png(image), 378, 331).numpy()
    np.testing.assert_array_equal(np.asarray(converter(image)), expected)


def test_same_as_the_package_evaluation_preprocessing():
    # Crop 0.875 of the shorter side, resize to 75 (antialiased), normalise:
    # the package's tf.data evaluation path on the encoded image.
    converter = PolyNetImageConverter(image_size=(75, 75), crop_fraction=0.875)
    for height, width in ((120, 97), (90, 160), (80, 80)):
        image = _image(height, width)
        expected = preprocess_for_eval(tf.io.encode_png(image), 75).numpy()
        got = np.asarray(converter(image))  # unbatched, eager
        assert got.shape == (75, 75, 3)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
        # The same inside tf.data (keras-hub's fit/predict path), batched.
        mapped = tf.data.Dataset.from_tensors(image[None]).map(converter)
        np.testing.assert_allclose(next(iter(mapped)).numpy()[0], expected, rtol=0, atol=2e-5)


def test_lists_of_images_of_different_sizes_and_labels_pass_through():
    converter = PolyNetImageConverter(image_size=(75, 75))
    images = [_image(120, 97), _image(90, 160, seed=1)]
    got = converter(images)
    assert [tuple(x.shape) for x in got] == [(75, 75, 3), (75, 75, 3)]
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(converter(images[1])), atol=0)
    preprocessor = PolyNetImageClassifierPreprocessor(converter)
    x, y = preprocessor(np.stack([_image(90, 90), _image(90, 90, seed=2)]), y=np.array([1, 0]))
    assert tuple(x.shape) == (2, 75, 75, 3)
    np.testing.assert_array_equal(np.asarray(y), [1, 0])
    # No crop: keras-hub's own aspect-ratio crop of the whole image.
    whole = PolyNetImageConverter(image_size=(75, 75), crop_fraction=1.0)
    expected = preprocess_for_eval(tf.io.encode_png(images[0]), 75, crop_fraction=1.0).numpy()
    np.testing.assert_allclose(np.asarray(whole(images[0])), expected, rtol=0, atol=2e-5)


def test_converter_of_a_protocol():
    single = PolyNetImageConverter.from_protocol(
        protocols.get_protocol("single", crop_size=75, crop_fraction=0.8), mean=(0.5,) * 3,
        std=(0.25,) * 3)
    assert single.image_size == (75, 75) and single.input_contract.crop_fraction == 0.8
    image = _image(120, 97)
    expected = preprocess_for_eval(tf.io.encode_png(image), 75, crop_fraction=0.8,
                                   mean=(0.5,) * 3, std=(0.25,) * 3).numpy()
    np.testing.assert_array_equal(np.asarray(single(image)), expected)
    shorter = PolyNetImageConverter.from_protocol(
        protocols.get_protocol("shorter_side", crop_size=75, scales=(90,), antialias=False),
        mean=(0.5,) * 3, std=(0.25,) * 3)
    assert shorter.input_contract == InputContract(
        "shorter_side", 75, resize_size=90, antialias=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert not shorter.antialias
    with pytest.raises(ValueError, match="crop_fraction applies to protocol 'single' only"):
        PolyNetImageConverter.from_protocol(protocols.get_protocol("squash", crop_size=75),
                                            (0.5,) * 3, (0.25,) * 3, crop_fraction=0.9)
    with pytest.raises(ValueError, match="one crop per image.*'polynet_multicrop'"):
        PolyNetImageConverter.from_protocol(protocols.get_protocol("polynet_multicrop"),
                                            (0.5,) * 3, (0.25,) * 3)


def test_a_contract_and_contradicting_arguments_are_refused():
    contract = InputContract("squash", 75)
    assert PolyNetImageConverter(image_size=(75, 75), input_contract=contract).image_size == (
        75, 75)
    with pytest.raises(ValueError, match="`image_size`=.* contradicts the input contract"):
        PolyNetImageConverter(image_size=(80, 80), input_contract=contract)
    with pytest.raises(ValueError, match="`crop_fraction` is part of the input contract"):
        PolyNetImageConverter(crop_fraction=0.8, input_contract=contract)
    # The contract travels in the config (keras-hub presets) as plain data.
    config = PolyNetImageConverter.from_contract(contract).get_config()
    assert config["input_contract"]["protocol"] == "squash"
    assert PolyNetImageConverter.from_config(config).input_contract == contract
