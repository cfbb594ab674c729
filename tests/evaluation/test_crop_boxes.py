"""The evaluator's accuracy on images whose crops differ: a wrong crop box changes it.

Each image is a background with an off-centre block of another colour, so
the mean-colour classifier's answer depends on which part a crop keeps.
Labels come from an independent reference, the data package's crop
functions (`preprocess_for_eval`, `shorter_side_center_crop`,
`squash_center_crop`): label = the r-th class of the reference crop's
ranking, so top-1 is known only if the evaluator cuts the same box.
"""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import example_format
from polynet_tf.data import preprocessing as reference
from polynet_tf.evaluation import data, get_protocol
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.model_sources import keras_scorer
from tests.evaluation import helpers

# (background, block colour, block corner, rank of the label in the reference ranking)
IMAGES = [
    ((220, 200, 40), (10, 10, 10), "top_left", 0), ((40, 60, 200), (250, 250, 250),
                                                    "bottom_right", 0),
    ((30, 190, 50), (220, 30, 200), "top_right", 0), ((128, 128, 128), (240, 140, 20),
                                                      "bottom_left", 1),
    ((230, 40, 40), (40, 210, 220), "top_left", 2), ((20, 20, 20), (230, 220, 40),
                                                     "bottom_right", 0),
]
CROP = 32


def _image(background, block, corner, height, width):
    image = helpers.solid(height, width, background)
    block_h, block_w = int(height * 0.55), int(width * 0.55)
    rows = slice(0, block_h) if corner.startswith("top") else slice(height - block_h, height)
    cols = slice(0, block_w) if corner.endswith("left") else slice(width - block_w, width)
    image[rows, cols] = block
    return image


def _reference_crop(jpeg, name):
    image = tf.constant(jpeg)
    if name == "single":
        return reference.preprocess_for_eval(image, CROP, 0.875)
    if name == "shorter_side":
        return reference.shorter_side_center_crop(image, 40, CROP)
    return reference.squash_center_crop(image, 40, CROP)


def _shards(directory, name):
    model = helpers.colour_model()
    examples, labels = [], []
    for number, (background, block, corner, rank) in enumerate(IMAGES):
        height, width = (40, 60) if number % 2 == 0 else (60, 40)
        jpeg = helpers.encode_jpeg(_image(background, block, corner, height, width))
        probabilities = model(_reference_crop(jpeg, name)[None]).numpy()[0]
        label = int(np.argsort(-probabilities, kind="stable")[rank])
        labels.append(label)
        examples.append(example_format.make_example(jpeg, label, f"c{label}", height, width,
                                                    f"{number}.jpg").SerializeToString())
    example_format.write_shard(str(directory / "validation-00000-of-00001"), examples)
    return labels


def _top1(directory, protocol):
    records = data.tfrecord_records(str(directory / "validation-*"))
    evaluator = Evaluator([keras_scorer(helpers.colour_model())], protocol)
    report = evaluator.evaluate(data.crops_dataset(records.dataset, protocol, 2),
                                records.num_images, records.class_names, progress=False)
    return report["top1_accuracy"]


@pytest.mark.parametrize("name, right, wrong", [
    ("single", dict(crop_fraction=0.875), dict(crop_fraction=0.5)),
    ("shorter_side", dict(scales=(40,)), dict(scales=(56,))),
    ("squash", dict(scales=(40,)), dict(scales=(64,))),
])
def test_accuracy_needs_the_right_crop_box(tmp_path, name, right, wrong):
    _shards(tmp_path, name)
    expected = np.mean([rank == 0 for *_, rank in IMAGES])  # 4 / 6
    assert _top1(tmp_path, get_protocol(name, crop_size=CROP, **right)) == pytest.approx(
        expected)
    # Another box (a smaller centre, or a larger resize before the centre crop) sees
    # less of the blocks: the answers, hence the accuracy, change.
    assert _top1(tmp_path, get_protocol(name, crop_size=CROP, **wrong)) != pytest.approx(
        expected)


def test_the_crops_differ_from_the_whole_image(tmp_path):
    """The images are not solid colours: whole image and centre crop disagree."""
    for background, block, corner, _ in IMAGES:
        jpeg = helpers.encode_jpeg(_image(background, block, corner, 40, 60))
        whole = reference.preprocess_for_eval(tf.constant(jpeg), CROP, 1.0).numpy()
        centre = reference.preprocess_for_eval(tf.constant(jpeg), CROP, 0.5).numpy()
        # Mean colours (what the classifier sees) differ clearly (normalised units).
        assert np.abs(whole.mean(axis=(0, 1)) - centre.mean(axis=(0, 1))).max() > 0.1
