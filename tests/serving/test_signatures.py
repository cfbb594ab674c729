"""The exported signatures, loaded in a fresh process, against the Keras model.

References are computed here, independently of the serving graph: the data
package's `preprocess_for_eval` for the single crop (PNG inputs decode
identically everywhere), the evaluator's `make_crops`/`pool_scores` for the
multi-crop protocol, and NumPy for top-k.
"""

import pickle
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import preprocessing as data_preprocessing
from polynet_tf.evaluation import protocols
from tests.serving.conftest import (
    CLASS_NAMES, CROP_SIZE, MEAN, STD, encode, random_image, run_python)

RUNNER = r"""
import pickle, sys
import tensorflow as tf
assert "polynet_tf" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    calls = pickle.load(f)
results = []
for signature, inputs in calls:
    try:
        outputs = loaded.signatures[signature](
            **{k: tf.constant(v) for k, v in inputs.items()})
        results.append({k: v.numpy() for k, v in outputs.items()})
    except tf.errors.InvalidArgumentError as error:
        results.append({"error": type(error).__name__, "message": error.message})
assert "polynet_tf" not in sys.modules
with open(sys.argv[3], "wb") as f:
    pickle.dump(results, f)
"""

PNG_A = encode(random_image(90, 120, 1), "PNG")
PNG_B = encode(random_image(140, 101, 2), "PNG")
JPEG_C = encode(random_image(100, 100, 3), "JPEG")
PIXELS = np.stack([random_image(83, 97, 4), random_image(83, 97, 5)])
GIF_D = encode(random_image(60, 70, 7), "GIF")
CROPS = np.stack([random_image(CROP_SIZE, CROP_SIZE, 6)]).astype(np.float32)


def _example(data):
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(
        feature={"image/encoded": feature})).SerializeToString()


CALLS = [
    ("serving_default", {"images": np.array([PNG_A, PNG_B, JPEG_C], dtype=object)}),
    ("serve_images", {"images": PIXELS.astype(np.float32)}),
    ("serve_images_uint8", {"images": PIXELS}),
    ("serve_crops", {"crops": CROPS}),
    ("serve_examples", {"examples": np.array([_example(PNG_B), _example(PNG_A)],
                                             dtype=object)}),
    ("serving_multicrop", {"images": np.array([PNG_B], dtype=object)}),
    # Bad input.
    ("serving_default", {"images": np.array([PNG_A, b"this is not an image"], dtype=object)}),
    ("serving_default", {"images": np.array([PNG_A, PNG_B, b""], dtype=object)}),
    ("serve_examples", {"examples": np.array([_example(b"\x00" * 50)], dtype=object)}),
    ("serving_default", {"images": np.array([JPEG_C[:200]], dtype=object)}),
    # Failures inside the decoder, after the header checks.
    ("serving_default", {"images": np.array([PNG_A, JPEG_C, JPEG_C[:300]], dtype=object)}),
    ("serving_multicrop", {"images": np.array([GIF_D[:40], PNG_A], dtype=object)}),
    ("serve_examples", {"examples": np.array([_example(PNG_A), _example(PNG_B[:120])],
                                             dtype=object)}),
]


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calls")
    with open(folder / "calls.pkl", "wb") as f:
        pickle.dump(CALLS, f)
    run_python(RUNNER, exported[2], str(folder / "calls.pkl"), str(folder / "out.pkl"))
    with open(folder / "out.pkl", "rb") as f:
        return pickle.load(f)


def _normalize(images):
    images = np.asarray(images, np.float32) / 255.0
    return (images - np.float32(MEAN)) / np.float32(STD)


def _keras_probabilities(model, crops_0_255):
    return model(_normalize(crops_0_255), training=False).numpy()


def _eval_crop(data):
    return data_preprocessing.preprocess_for_eval(
        tf.constant(data), CROP_SIZE, 0.875, normalize=False).numpy()


def _check_top_k(outputs, probabilities, k=3):
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-5, rtol=0)
    expected = np.argsort(-probabilities, axis=1)[:, :k]
    np.testing.assert_array_equal(outputs["classes"], expected)
    np.testing.assert_allclose(outputs["scores"],
                               np.take_along_axis(probabilities, expected, axis=1), atol=1e-5)
    names = np.array(CLASS_NAMES, dtype=object)[expected]
    assert [[n.decode() for n in row] for row in outputs["labels"]] == names.tolist()


def test_encoded_images_equal_keras_on_the_eval_crop(exported, served):
    model = exported[0]
    pngs = np.stack([_eval_crop(PNG_A), _eval_crop(PNG_B)])
    expected = _keras_probabilities(model, pngs)
    outputs = served[0]
    assert outputs["probabilities"].shape == (3, len(CLASS_NAMES))
    _check_top_k({k: v[:2] for k, v in outputs.items()}, expected)
    # JPEG: the evaluator's crop of the whole decoded image (the data package
    # decodes only the crop window, which may round differently).
    protocol = protocols.get_protocol("single", crop_size=CROP_SIZE, crop_fraction=0.875)
    jpeg_crop = protocols.make_crops(tf.io.decode_jpeg(JPEG_C, channels=3), protocol).numpy()
    np.testing.assert_allclose(outputs["probabilities"][2:],
                               _keras_probabilities(model, jpeg_crop), atol=1e-5, rtol=0)
    assert np.abs(outputs["probabilities"] - outputs["probabilities"][::-1]).max() > 1e-3


def test_image_tensors_float_and_uint8(exported, served):
    model = exported[0]
    crops = np.stack([_eval_crop(encode(image, "PNG")) for image in PIXELS])
    expected = _keras_probabilities(model, crops)
    _check_top_k(served[1], expected)
    _check_top_k(served[2], expected)


def test_crops_and_examples(exported, served):
    model = exported[0]
    _check_top_k(served[3], _keras_probabilities(model, CROPS))
    expected = _keras_probabilities(model, np.stack([_eval_crop(PNG_B), _eval_crop(PNG_A)]))
    _check_top_k(served[4], expected)


def test_multicrop_equals_the_evaluator_protocol(exported, served):
    model, options, _ = exported
    protocol = options.multicrop
    assert protocol.num_crops == 72 and protocol.topk == 11
    crops = protocols.make_crops(tf.io.decode_png(PNG_B, channels=3), protocol).numpy()
    scores = _keras_probabilities(model, crops)[None]
    expected = protocols.pool_scores(scores, protocol).numpy()
    # Independent check of the top-k pooling in NumPy.
    per_scale = np.sort(scores.reshape(1, 2, 36, -1), axis=2)[:, :, -11:, :]
    np.testing.assert_allclose(expected, per_scale.mean(axis=2).mean(axis=1), atol=1e-6)
    _check_top_k(served[5], expected)


@pytest.mark.parametrize("index, words", [
    (6, ["serving_default", "not an encoded", "Position", "[1]"]),
    (7, ["serving_default", "empty string", "Position", "[2]"]),
    (8, ["serve_examples", "not an encoded", "[0]"]),
    (9, ["serving_default", "cannot be decoded", "Position", "[0]"]),
    (10, ["serving_default", "cannot be decoded", "truncated or corrupt", "[2]"]),
    (11, ["serving_multicrop", "cannot be decoded", "[0]"]),
    (12, ["serve_examples", "cannot be decoded", "[1]"]),
])
def test_bad_input_is_invalid_argument_naming_the_problem(served, index, words):
    result = served[index]
    assert result.get("error") == "InvalidArgumentError", result
    for word in words:
        assert word.lower() in result["message"].lower(), result["message"]


def test_saved_model_cli_lists_the_signatures(exported):
    import os
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", exported[2], "--all"], capture_output=True,
                           text=True, timeout=300).stdout
    for name in ("serving_default", "serve_images", "serve_images_uint8", "serve_crops",
                 "serve_examples", "serving_multicrop"):
        assert f"signature_def['{name}']" in shown
    for output in ("classes", "labels", "scores", "probabilities"):
        assert f"outputs['{output}']" in shown
    assert "output_0" not in shown
