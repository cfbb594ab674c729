"""Crop protocols: hand-computed boxes, crops against the data package, top-k pooling."""

import math

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import preprocessing
from polynet_tf.evaluation import protocols
from polynet_tf.evaluation.protocols import CropProtocol, get_protocol, make_crops, pool_scores
from tests.evaluation.helpers import encode_jpeg, photo


def _googlenet_square_boxes(sy, sx, square, size):
    """The 6 boxes of one square, written out by hand (corners, centre, whole)."""
    far, mid = square - size, (square - size + 1) // 2
    return [
        (sy, sx, sy + size, sx + size),
        (sy, sx + far, sy + size, sx + far + size),
        (sy + far, sx, sy + far + size, sx + size),
        (sy + far, sx + far, sy + far + size, sx + far + size),
        (sy + mid, sx + mid, sy + mid + size, sx + mid + size),
        (sy, sx, sy + square, sx + square),
    ]


# ------------------------------------------------------------------- boxes
def test_single_box_is_the_central_fraction_of_the_shorter_side():
    protocol = get_protocol("single", crop_size=224, crop_fraction=0.875)
    # 0.875 * 300 = 262.5 -> 262; (300 - 262 + 1) // 2 = 19, (400 - 262 + 1) // 2 = 69.
    np.testing.assert_array_equal(protocol.crop_boxes(300, 400), [[19, 69, 281, 331]])
    assert protocol.num_crops == 1


def test_released_squash_box_is_the_centre_331_of_the_378_square():
    protocol = get_protocol("squash")
    assert protocol.scaled_size(300, 400, 0) == (378, 378)
    # (378 - 331 + 1) // 2 = 24.
    np.testing.assert_array_equal(protocol.crop_boxes(300, 400), [[24, 24, 355, 355]])


def _torchvision_resize_crop_box(height, width, resize, crop):
    """torchvision Resize(resize) + CenterCrop(crop), written out independently."""
    if width <= height:
        new_width, new_height = resize, int(resize * height / width)
    else:
        new_height, new_width = resize, int(resize * width / height)
    top = int(round((new_height - crop) / 2.0))
    left = int(round((new_width - crop) / 2.0))
    return (new_height, new_width), [top, left, top + crop, left + crop]


@pytest.mark.parametrize("name, resize", [("shorter_side", 378), ("pytorchcv", 379)])
@pytest.mark.parametrize("height, width", [(333, 500), (500, 375), (300, 302), (378, 378),
                                           (240, 640)])
def test_released_box_keeps_the_aspect_ratio_like_the_references(name, resize, height, width):
    protocol = get_protocol(name)
    scaled, box = _torchvision_resize_crop_box(height, width, resize, 331)
    assert protocol.scaled_size(height, width, 0) == scaled
    np.testing.assert_array_equal(protocol.crop_boxes(height, width), [box])


def test_released_box_by_hand():
    protocol = get_protocol("shorter_side")
    # 333x500: 500 * 378 / 333 = 567.57 -> 567 (truncated); (567 - 331) / 2 = 118.
    np.testing.assert_array_equal(protocol.crop_boxes(333, 500), [[24, 118, 355, 449]])
    # 300x302: 302 * 378 / 300 = 380.52 -> 380; (380 - 331) / 2 = 24.5 -> 24 (to even).
    np.testing.assert_array_equal(protocol.crop_boxes(300, 302), [[24, 24, 355, 355]])


def test_googlenet144_boxes_by_hand_landscape():
    protocol = get_protocol("googlenet144")
    boxes = protocol.crop_boxes(300, 400)
    assert boxes.shape == (144, 4) and protocol.num_crops == 144
    # Scale 256: 400 * 256 / 300 = 341.33 -> 341 wide; squares at x = 0, 43, 85.
    assert protocol.scaled_size(300, 400, 0) == (256, 341)
    expected = []
    for sx in (0, 43, 85):
        for box in _googlenet_square_boxes(0, sx, 256, 224):
            expected += [box, box]  # unmirrored, mirrored
    np.testing.assert_array_equal(boxes[:36], expected)
    # A few written out fully: centre square (x = 43), far = 32, mid = 16.
    np.testing.assert_array_equal(boxes[12:24:2], [
        [0, 43, 224, 267], [0, 75, 224, 299], [32, 43, 256, 267],
        [32, 75, 256, 299], [16, 59, 240, 283], [0, 43, 256, 299]])
    # Scale 352: 400 * 352 / 300 = 469.33 -> 469; squares at x = 0, 59, 117.
    assert protocol.scaled_size(300, 400, 3) == (352, 469)
    np.testing.assert_array_equal(boxes[108 + 24:108 + 36:2], [
        [0, 117, 224, 341], [0, 245, 224, 469], [128, 117, 352, 341],
        [128, 245, 352, 469], [64, 181, 288, 405], [0, 117, 352, 469]])
    np.testing.assert_array_equal(protocol.crop_scale_indices(), np.repeat(np.arange(4), 36))
    np.testing.assert_array_equal(protocol.crop_mirrored(), np.tile([False, True], 72))


def test_googlenet144_portrait_squares_run_top_to_bottom():
    protocol = get_protocol("googlenet144")
    # Scale 288 of a 400x300 image: 400 * 288 / 300 = 384 tall; squares at y = 0, 48, 96.
    assert protocol.scaled_size(400, 300, 1) == (384, 288)
    boxes = protocol.crop_boxes(400, 300)[36:72:2]
    expected = [b for sy in (0, 48, 96) for b in _googlenet_square_boxes(sy, 0, 288, 224)]
    np.testing.assert_array_equal(boxes, expected)


def test_polynet_multicrop_is_8_scales_of_36_crops():
    protocol = get_protocol("polynet_multicrop")
    assert protocol.scales == (352, 384, 416, 448, 480, 512, 544, 576)
    assert (protocol.num_crops, protocol.crops_per_scale, protocol.topk) == (288, 36, 11)
    boxes = protocol.crop_boxes(300, 400)
    assert boxes.shape == (288, 4)
    # Scale 576: 400 * 576 / 300 = 768; squares at x = 0, 96, 192; far 245, mid 123.
    assert protocol.scaled_size(300, 400, 7) == (576, 768)
    np.testing.assert_array_equal(boxes[-12::2], [
        [0, 192, 331, 523], [0, 437, 331, 768], [245, 192, 576, 523],
        [245, 437, 576, 768], [123, 315, 454, 646], [0, 192, 576, 768]])


def test_overrides_and_derived_scales():
    protocol = get_protocol("polynet_multicrop", scales=[400], topk_fraction=0.5)
    assert protocol.scales == (400,) and protocol.topk == 18
    scaled = get_protocol("googlenet144", crop_size=112)
    assert scaled.scales == (128, 144, 160, 176)
    assert get_protocol("shorter_side", crop_size=100).scales == (114,)  # 100 * 378 / 331
    assert get_protocol("squash", crop_size=100).scales == (114,)
    assert get_protocol("pytorchcv", crop_size=100).scales == (115,)  # x 379 / 331
    assert get_protocol("polynet_multicrop", crop_size=75).scales[0] == 80  # 75 * 352 / 331
    assert get_protocol("polynet_multicrop", topk_fraction=1.0).topk == 36


# ------------------------------------------------------------------- crops
@pytest.fixture(scope="module")
def jpeg_bytes():
    return encode_jpeg(photo(120, 160))


def test_single_crop_equals_preprocess_for_eval(jpeg_bytes):
    protocol = get_protocol("single", crop_size=96, crop_fraction=0.8)
    image = tf.io.decode_jpeg(jpeg_bytes, channels=3)
    # PNG of the decoded pixels: preprocess_for_eval then sees the same pixels
    # (for JPEGs it decodes only the window, whose border pixels differ).
    png = tf.io.encode_png(image)
    expected = preprocessing.preprocess_for_eval(png, 96, 0.8, normalize=False)
    crop = make_crops(image, protocol)[0]
    np.testing.assert_allclose(crop, expected, atol=1e-4)
    from_jpeg = preprocessing.preprocess_for_eval(tf.constant(jpeg_bytes), 96, 0.8,
                                                  normalize=False)
    assert np.mean(np.abs(crop - from_jpeg)) < 0.1


def test_released_crop_equals_pil_resize_of_the_shorter_side_and_centre_crop():
    from PIL import Image

    height, width = 150, 201
    image = photo(height, width)
    protocol = get_protocol("shorter_side", crop_size=100, scales=(114,))
    (new_height, new_width), (top, left, bottom, right) = _torchvision_resize_crop_box(
        height, width, 114, 100)
    assert (new_height, new_width) == (114, 152)
    resized = Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR)
    expected = np.asarray(resized, np.float32)[top:bottom, left:right]
    crop = make_crops(image, protocol)[0].numpy()
    # TensorFlow's antialiased bilinear resize is PIL's up to rounding: PIL
    # returns uint8, and their filters' edge handling differs slightly.
    assert np.mean(np.abs(crop - expected)) < 1.0
    assert np.percentile(np.abs(crop - expected), 99) < 4.0
    # The crop window matters: one pixel to the side is far off.
    shifted = np.asarray(resized, np.float32)[top:bottom, left + 1:right + 1]
    assert np.mean(np.abs(crop - shifted)) > 2 * np.mean(np.abs(crop - expected))


@pytest.mark.parametrize("size", [(120, 160), (160, 121)])
def test_released_crop_equals_shorter_side_center_crop(size):
    image = photo(*size)
    png = tf.io.encode_png(image)
    for name, resize in (("shorter_side", 114), ("pytorchcv", 115)):
        protocol = get_protocol(name, crop_size=100)
        assert protocol.scales == (resize,)
        expected = preprocessing.shorter_side_center_crop(png, resize, 100, normalize=False)
        np.testing.assert_allclose(make_crops(image, protocol)[0], expected, atol=1e-4)


def test_released_squash_crop_equals_squash_center_crop(jpeg_bytes):
    protocol = get_protocol("squash", crop_size=100, scales=(114,))
    image = tf.io.decode_jpeg(jpeg_bytes, channels=3)
    expected = preprocessing.squash_center_crop(tf.constant(jpeg_bytes), 114, 100,
                                                normalize=False)
    np.testing.assert_allclose(make_crops(image, protocol)[0], expected, atol=1e-4)


def test_crops_cut_exactly_the_boxes():
    # An image whose pixels hold their own coordinates, at a scale that needs
    # no resize: every unresized crop's corner pixel names its box.
    height, width = 40, 56
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([ys, xs, np.zeros_like(ys)], axis=-1).astype(np.float32)
    protocol = CropProtocol("probe", crop_size=32, scales=(40,), layout="googlenet",
                            mirror=True)
    crops = make_crops(image, protocol).numpy()
    boxes = protocol.crop_boxes(height, width)
    mirrored = protocol.crop_mirrored()
    assert crops.shape == (36, 32, 32, 3)
    for crop, box, flipped in zip(crops, boxes, mirrored):
        y0, x0, y1, x1 = box
        if y1 - y0 == 32:
            expected = image[y0:y1, x0:x1]
            np.testing.assert_array_equal(crop, expected[:, ::-1] if flipped else expected)
        else:  # the whole square, resized: its mean coordinate is the square's centre
            np.testing.assert_allclose(crop[..., :2].mean(axis=(0, 1)),
                                       [(y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2], atol=0.5)


def test_make_crops_in_a_graph_with_unknown_shape_and_map_fn():
    protocol = get_protocol("googlenet144", crop_size=24)
    images = tf.random.uniform([2, 30, 44, 3], maxval=255)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def crops_of(image):
        return make_crops(image, protocol)

    eager = make_crops(tf.cast(images[0], tf.uint8), protocol)
    np.testing.assert_allclose(crops_of(tf.cast(images[0], tf.uint8)), eager, atol=1e-4)
    mapped = tf.map_fn(lambda im: make_crops(im, protocol), images,
                       fn_output_signature=tf.TensorSpec([144, 24, 24, 3], tf.float32))
    assert mapped.shape == (2, 144, 24, 24, 3)
    np.testing.assert_allclose(mapped[1], make_crops(images[1], protocol), atol=1e-4)


# ----------------------------------------------------------------- pooling
def numpy_topk_pool(scores, num_scales, k):
    """Reference: per scale and class the mean of the k best crops, then over scales."""
    batch, crops, classes = scores.shape
    per_scale = crops // num_scales
    out = np.zeros((batch, classes))
    for b in range(batch):
        for s in range(num_scales):
            for c in range(classes):
                column = sorted(scores[b, s * per_scale:(s + 1) * per_scale, c], reverse=True)
                out[b, c] += np.mean(column[:k]) / num_scales
    return out


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.05])
def test_topk_pooling_matches_numpy(fraction):
    protocol = get_protocol("polynet_multicrop", topk_fraction=fraction)
    scores = np.random.default_rng(0).random((3, 288, 7)).astype(np.float32)
    k = math.ceil(round(fraction * 36, 9))
    assert protocol.topk == k
    np.testing.assert_allclose(pool_scores(scores, protocol),
                               numpy_topk_pool(scores, 8, k), rtol=1e-5)


def test_fraction_one_is_plain_mean():
    scores = np.random.default_rng(1).random((2, 288, 5)).astype(np.float32)
    protocol = get_protocol("polynet_multicrop", topk_fraction=1.0)
    np.testing.assert_allclose(pool_scores(scores, protocol), scores.mean(axis=1), rtol=1e-5)
    mean_protocol = get_protocol("googlenet144")
    scores = scores[:, :144]
    np.testing.assert_allclose(pool_scores(scores, mean_protocol), scores.mean(axis=1),
                               rtol=1e-5)


def test_one_scale_one_crop_is_the_crop_score():
    protocol = CropProtocol("one", crop_size=32, scales=(32,), pooling="topk",
                            topk_fraction=0.3)
    assert protocol.num_crops == 1 and protocol.topk == 1
    scores = np.random.default_rng(2).random((4, 1, 6)).astype(np.float32)
    np.testing.assert_allclose(pool_scores(scores, protocol), scores[:, 0], rtol=1e-6)


def test_pool_scores_rejects_the_wrong_crop_count():
    with pytest.raises(ValueError, match="makes 144"):
        pool_scores(np.zeros((1, 10, 3)), get_protocol("googlenet144"))


# ------------------------------------------------------------------ errors
IN_UNIT_INTERVAL = r"must be in \(0, 1\]"


@pytest.mark.parametrize("call, message", [
    (lambda: get_protocol("tencrop"), "Unknown evaluation protocol 'tencrop'"),
    (lambda: get_protocol("polynet_multicrop", topk_fraction=0.0), IN_UNIT_INTERVAL),
    (lambda: get_protocol("polynet_multicrop", topk_fraction=1.5), IN_UNIT_INTERVAL),
    (lambda: get_protocol("single", crop_fraction=1.2), r"crop_fraction must be in \(0, 1\]"),
    (lambda: get_protocol("googlenet144", scales=(200, 256)), r"larger than scale\(s\) \[200\]"),
    (lambda: get_protocol("shorter_side", crop_size=400, scales=(378,)), "crop_size 400 is larger"),
    (lambda: get_protocol("googlenet144", rounding="torchvision"),
     "rounding='torchvision' applies to layout='center' only"),
    (lambda: get_protocol("shorter_side", rounding="up"), "rounding must be one of"),
    (lambda: get_protocol("single", crop_fraction=None),
     "needs layout='center' and a crop_fraction"),
    (lambda: get_protocol("single", scale=3), r"Unknown protocol field\(s\) \['scale'\]"),
    (lambda: CropProtocol("x", crop_size=0, scales=(8,)), "crop_size must be a positive"),
    (lambda: CropProtocol("x", crop_size=8, scales=(8,), pooling="max"), "pooling must be one of"),
    (lambda: CropProtocol("x", crop_size=8, resize="shorter_side"), "needs at least one scale"),
])
def test_bad_protocols_are_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_protocol_is_frozen_data():
    protocol = get_protocol("polynet_multicrop")
    with pytest.raises(Exception):
        protocol.crop_size = 10
    values = protocol.to_dict()
    assert values["scales"] == list(protocols.POLYNET_MULTICROP_SCALES)
    assert values["num_crops"] == 288 and values["topk"] == 11


def test_the_evaluators_default_protocol_is_the_models_input_contract():
    from polynet_tf import evaluate
    from polynet_tf.data import InputContract

    contract = InputContract("squash", 75)  # A model loaded with weights="imagenet" at 75.

    def protocol(*argv):
        assert evaluate.cli.parse("evaluate", "", evaluate.FLAGS, list(argv)) == -1
        return evaluate.protocol_from_flags(evaluate.FLAGS, contract)

    assert protocol() == contract.crop_protocol()
    assert (protocol().resize, protocol().scales) == ("squash", (86,))
    # Flags over the contract: a size keeps its resize ratio, a protocol replaces it.
    assert protocol("--image_size", "64").scales == (73,)
    assert protocol("--crop_size", "64").crop_size == 64  # the deprecated name
    assert protocol("--scales", "80").scales == (80,)
    assert protocol("--protocol", "shorter_side").rounding == "torchvision"
    assert protocol("--protocol", "single").crop_fraction == 0.875
    assert protocol("--protocol", "googlenet144").num_crops == 144
    assert evaluate.protocol_from_flags(evaluate.FLAGS).name == "googlenet144"
    assert protocol() == contract.crop_protocol()  # each parse starts from the defaults
    assert evaluate.protocol_from_flags(evaluate.FLAGS, None).name == "single"
