"""Tests of `polynet_tf.data.preprocessing`: crops, flips, evaluation protocols."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import normalization, preprocessing
from tests.data.conftest import encode, image_array

_NUM_SAMPLES = 1000


def _crop_windows(image_shape, count=_NUM_SAMPLES, **kwargs):
    seeds = tf.data.Dataset.range(count).map(lambda i: tf.stack([tf.constant(5, tf.int64), i]))
    windows = seeds.map(lambda seed: preprocessing.sample_crop_window(
        tf.constant(image_shape), seed, **kwargs)).batch(count)
    return windows.get_single_element().numpy()


def test_random_crops_respect_and_cover_area_and_aspect_ranges():
    height, width = 375, 500
    windows = _crop_windows((height, width, 3))
    y, x, h, w = windows.T
    area = h * w / (height * width)
    aspect = w / h
    assert np.all((y >= 0) & (x >= 0) & (y + h <= height) & (x + w <= width))
    assert area.min() >= 0.08 and area.max() <= 1.0
    # Widths are whole pixels: aspect may miss the range by half a pixel.
    slack = 0.5 / h
    assert np.all(aspect >= 0.75 - slack) and np.all(aspect <= 4 / 3 + slack)
    # Both ranges actually covered, not just respected.
    assert area.min() < 0.12 and area.max() > 0.9
    assert aspect.min() < 0.78 and aspect.max() > 1.28
    assert np.median(area) > 0.2 and np.median(area) < 0.8
    # Crops are placed everywhere, not only in the centre (TF's sampler never
    # puts a narrower-than-image crop at the very last column: hence -1).
    assert x.min() == 0 and (x + w).max() >= width - 1


def test_crop_falls_back_to_an_allowed_centred_crop_when_sampling_fails():
    # A 10x400 strip: no window of 8% area has an aspect ratio within [3/4, 4/3].
    windows = _crop_windows((10, 400, 3), count=50)
    assert np.all(windows == windows[0])
    y, x, h, w = windows[0]
    assert (h, w) == (10, 13) and (y, x) == (0, (400 - 13) // 2)


def test_same_seed_same_crop_and_flip_different_seed_differs():
    data = encode(image_array(48, 64, seed=1))
    seed = tf.constant([3, 4], tf.int64)
    first = preprocessing.preprocess_for_train(data, 32, seed)
    again = tf.function(preprocessing.preprocess_for_train)(data, 32, seed)
    other = preprocessing.preprocess_for_train(data, 32, tf.constant([3, 5], tf.int64))
    # Eager and graph execution may round differently in the last bit.
    np.testing.assert_allclose(first.numpy(), again.numpy(), atol=1e-5)
    assert not np.allclose(first.numpy(), other.numpy())


def test_horizontal_flip_frequency_is_one_half():
    # A left-to-right ramp: a flipped crop is brighter on its left side.
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], (48, 1, 3))
    data = tf.constant(encode(ramp.astype(np.uint8), "PNG"))
    seeds = tf.data.Dataset.range(_NUM_SAMPLES).map(
        lambda i: tf.stack([tf.constant(9, tf.int64), i]))
    images = seeds.map(lambda seed: preprocessing.preprocess_for_train(
        data, 8, seed, normalize=False)).batch(_NUM_SAMPLES).get_single_element().numpy()
    flipped = images[:, :, 0, 0].mean(axis=1) > images[:, :, -1, 0].mean(axis=1)
    # Binomial(1000, 0.5): standard deviation 0.016; 0.05 is over 3 of them.
    assert abs(flipped.mean() - 0.5) < 0.05
    no_flip = seeds.take(50).map(lambda seed: preprocessing.preprocess_for_train(
        data, 8, seed, normalize=False, random_flip=False)).batch(50).get_single_element()
    assert np.all(no_flip.numpy()[:, :, 0, 0].mean(1) < no_flip.numpy()[:, :, -1, 0].mean(1))


@pytest.mark.parametrize("size", [299, 331, (40, 56)])
def test_training_output_size_dtype_and_normalisation(size):
    data = encode(image_array(60, 80))
    image = preprocessing.preprocess_for_train(data, size, tf.constant([1, 2]))
    expected = (size, size) if isinstance(size, int) else size
    assert image.shape == (*expected, 3) and image.dtype == tf.float32
    # Normalised: pixel 0 maps to -mean/std, 255 to (1-mean)/std.
    low = -np.array(normalization.IMAGENET_MEAN) / normalization.IMAGENET_STD
    high = (1 - np.array(normalization.IMAGENET_MEAN)) / normalization.IMAGENET_STD
    assert np.all(image.numpy() >= low - 1e-5) and np.all(image.numpy() <= high + 1e-5)


def test_jpeg_and_png_give_the_same_crop():
    array = image_array(60, 80, seed=2)
    seed = tf.constant([7, 7], tf.int64)
    from_png = preprocessing.preprocess_for_train(encode(array, "PNG"), 24, seed)
    from_jpeg = preprocessing.preprocess_for_train(encode(array, "JPEG", quality=100), 24, seed)
    assert np.abs(from_png.numpy() - from_jpeg.numpy()).mean() < 0.05


def test_center_crop_window_numbers():
    window = preprocessing.center_crop_window(tf.constant([375, 500, 3]), 0.875)
    # 0.875 * 375 = 328.125 -> 328; offsets (375-328+1)//2 = 24, (500-328+1)//2 = 86.
    assert window.numpy().tolist() == [24, 86, 328, 328]


def test_eval_center_crop_matches_manual_crop_and_resize():
    array = image_array(40, 60, seed=4)
    data = encode(array, "PNG")
    image = preprocessing.preprocess_for_eval(data, 16, crop_fraction=0.5, normalize=False)
    # Central 20x20 of the 40x60 image: rows 10..30, columns 20..40.
    expected = tf.image.resize(array[10:30, 20:40], [16, 16], antialias=True)
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-3)


def test_shorter_side_center_crop_is_the_released_protocol():
    from PIL import Image

    array = image_array(300, 451, seed=6)
    data = encode(array, "PNG")
    image = preprocessing.shorter_side_center_crop(data, normalize=False)
    assert image.shape == (331, 331, 3)
    # torchvision Resize(378): 451 * 378 / 300 = 568.26 -> 568 wide; CenterCrop(331):
    # rows round(47 / 2) = 24 (to even), columns round(237 / 2) = 118 (to even).
    resized = tf.image.resize(array, [378, 568], antialias=True)
    np.testing.assert_allclose(image.numpy(), resized[24:355, 118:449].numpy(), atol=1e-4)
    pil = np.asarray(Image.fromarray(array).resize((568, 378), Image.BILINEAR), np.float32)
    assert np.mean(np.abs(image.numpy() - pil[24:355, 118:449])) < 1.0
    # pytorchcv's 379, and a portrait image (the width is the shorter side).
    portrait = encode(image_array(451, 300, seed=7), "PNG")
    tall = preprocessing.shorter_side_center_crop(portrait, 379, normalize=False)
    resized = tf.image.resize(image_array(451, 300, seed=7), [569, 379], antialias=True)
    np.testing.assert_allclose(tall.numpy(), resized[119:450, 24:355].numpy(), atol=1e-4)
    normalized = preprocessing.shorter_side_center_crop(data)
    np.testing.assert_allclose(normalized.numpy(),
                               normalization.normalize_image(image).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="crop_size"):
        preprocessing.shorter_side_center_crop(data, resize_size=300, crop_size=331)


def test_squash_center_crop_ignores_the_aspect_ratio():
    array = image_array(300, 450, seed=6)
    data = encode(array, "PNG")
    image = preprocessing.squash_center_crop(data)
    assert image.shape == (331, 331, 3)
    squashed = tf.image.resize(array, [378, 378], antialias=True)
    expected = normalization.normalize_image(squashed[24:355, 24:355])
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="crop_size"):
        preprocessing.squash_center_crop(data, resize_size=300, crop_size=331)


def test_functions_work_on_one_string_inside_tf_function():
    data = encode(image_array(30, 40))

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def serve(image_bytes):
        return (preprocessing.preprocess_for_eval(image_bytes, 24),
                preprocessing.squash_center_crop(image_bytes, 36, 24),
                preprocessing.shorter_side_center_crop(image_bytes, 36, 24),
                preprocessing.preprocess_for_train(image_bytes, 24))

    shapes = [tuple(t.shape) for t in serve(tf.constant(data))]
    assert shapes == [(24, 24, 3)] * 4
