"""Tests of `polynet_tf.data.normalization`."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import IMAGENET_MEAN, IMAGENET_STD, normalize_image


def test_constants_are_the_released_weights():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_uint8_and_float_inputs_match_the_reference_formula():
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3)).astype(np.uint8)
    reference = ((pixels.astype(np.float32) / np.float32(255.0)
                  - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))
    from_uint8 = normalize_image(pixels)
    from_float = normalize_image(tf.constant(pixels, tf.float32))
    assert from_uint8.dtype == tf.float32 and from_uint8.shape == pixels.shape
    np.testing.assert_allclose(from_uint8.numpy(), reference, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(from_uint8.numpy(), from_float.numpy())
    # Black and white map to the documented extremes.
    extremes = normalize_image(np.array([[0, 0, 0], [255, 255, 255]], np.uint8)).numpy()
    np.testing.assert_allclose(extremes[0], [-2.1179039, -2.0357144, -1.8044444], atol=1e-6)
    np.testing.assert_allclose(extremes[1], [2.2489083, 2.4285715, 2.64], atol=1e-6)


def test_custom_statistics_and_errors():
    out = normalize_image(np.full((1, 1, 3), 255, np.uint8), mean=(0.5,) * 3, std=(0.5,) * 3)
    np.testing.assert_allclose(out.numpy(), 1.0)
    with pytest.raises(ValueError, match="3 entries"):
        normalize_image(np.zeros((1, 1, 3)), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        normalize_image(np.zeros((1, 1, 3)), std=(0.5, 0.0, 0.5))


def test_static_and_dynamic_shapes_give_identical_results():
    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 6, 5, 3)).astype(np.float32)
    dynamic = tf.function(normalize_image,
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    # Graph mode may turn a division by a constant into a multiplication (1 ulp).
    np.testing.assert_allclose(dynamic(pixels).numpy(), normalize_image(pixels).numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(normalize_image(pixels[0]).numpy(),
                                  normalize_image(pixels).numpy()[0])
