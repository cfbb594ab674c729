"""Fuzzing the serving signatures' decode path with mutated encoded images.

The same TensorFlow functions the encoded-image signatures run
(`check_encoded_batch`, `decode_checked`, `single_crop`, the contract's
`normalize`), in one
`tf.function` (no SavedModel per case). Every mutated image in second
position must give a normalised crop or an `InvalidArgumentError` naming the
signature and position 1; nothing else (no other error, no crash, no hang).
"""

import numpy as np
import tensorflow as tf

from polynet_tf.data import InputContract
from polynet_tf.serving import preprocessing as serving_preprocessing
from tests.fuzz.mutation import mutate, run_cases

CROP = 16


def _serve():
    contract = InputContract("single", CROP)
    protocol = contract.crop_protocol()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(images):
        with tf.control_dependencies([serving_preprocessing.check_encoded_batch(
                images, "serving_default")]):
            images = tf.identity(images)

        def one(args):
            data, position = args
            image = serving_preprocessing.decode_checked(data, position, "serving_default")
            return serving_preprocessing.single_crop(image, protocol)

        crops = tf.map_fn(one, (images, tf.range(tf.shape(images)[0])),
                          fn_output_signature=tf.TensorSpec([CROP, CROP, 3], tf.float32))
        return contract.normalize(crops)

    return serve


def test_mutated_images_give_a_crop_or_an_error_naming_the_position(seed_images):
    serve = _serve()
    outcomes = {"crop": 0, "refused": 0}

    def make_case(rng, number):
        return mutate(seed_images[number % len(seed_images)], rng)

    def check(data):
        try:
            crops = serve(tf.constant([seed_images[0], data])).numpy()
        except tf.errors.InvalidArgumentError as error:
            message = error.message
            assert "serving_default" in message and "Position" in message, message[:500]
            assert "[1]" in message or "1\n" in message or " 1" in message, message[:500]
            outcomes["refused"] += 1
            return
        assert crops.shape == (2, CROP, CROP, 3) and np.isfinite(crops).all()
        outcomes["crop"] += 1

    count = run_cases(make_case, check, min_cases=500, case_seconds=30)
    assert count >= 500 and outcomes["refused"] > 0 and outcomes["crop"] > 0, outcomes


def test_extreme_image_headers_are_refused_or_decoded(seed_images):
    """Sizes at the limits of each format's header fields."""
    import struct

    serve = _serve()
    cases = []
    jpeg, png, gif, bmp = (bytearray(seed_images[i]) for i in (0, 2, 3, 4))
    for height, width in ((65535, 65535), (1, 65535), (65535, 1), (0, 0), (30000, 30000)):
        data = bytearray(jpeg)
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
        cases.append(bytes(data))
        data = bytearray(png)
        data[16:24] = struct.pack(">II", min(height * 40000, 2**31 - 1), width)
        cases.append(bytes(data))
        data = bytearray(gif)
        data[6:10] = struct.pack("<HH", width, height)
        cases.append(bytes(data))
        data = bytearray(bmp)
        data[18:26] = struct.pack("<ii", width, -height)
        cases.append(bytes(data))
    for data in cases:
        try:
            crops = serve(tf.constant([seed_images[0], data])).numpy()
            assert crops.shape == (2, CROP, CROP, 3) and np.isfinite(crops).all()
        except tf.errors.InvalidArgumentError as error:
            assert "Position" in error.message, error.message[:500]
