"""Fixtures of the evaluation tests: small TFRecord shards of real JPEGs."""

import numpy as np
import pytest

from polynet_tf.data import example_format
from tests.evaluation import helpers

# Solid-colour JPEGs and how their labels relate to the colour classifier's
# ranking (helpers.expected_ranking): "rank r" = the r-th nearest class colour.
COLOUR_IMAGES = [
    ((210, 40, 35), 0), ((35, 190, 50), 0), ((120, 130, 125), 0),
    ((45, 200, 215), 1), ((235, 135, 30), 3), ((20, 20, 20), 9),
]


def colour_labels():
    """Labels of COLOUR_IMAGES and the expected top-1 / top-5 accuracy."""
    labels = [int(helpers.expected_ranking(rgb)[rank]) for rgb, rank in COLOUR_IMAGES]
    ranks = [rank for _, rank in COLOUR_IMAGES]
    top1 = np.mean([r == 0 for r in ranks])
    top5 = np.mean([r < 5 for r in ranks])
    return labels, top1, top5


@pytest.fixture(scope="session")
def colour_shards(tmp_path_factory):
    """Two shards of 6 solid-colour JPEGs (sizes 40x56 and 56x40) with a class index."""
    directory = tmp_path_factory.mktemp("colour_shards")
    labels, _, _ = colour_labels()
    examples = []
    for number, ((rgb, _), label) in enumerate(zip(COLOUR_IMAGES, labels)):
        height, width = (40, 56) if number % 2 == 0 else (56, 40)
        jpeg = helpers.encode_jpeg(helpers.solid(height, width, rgb))
        examples.append(example_format.make_example(
            jpeg, label, f"colour{label}", height, width, f"image{number}.jpg"
        ).SerializeToString())
    names = []
    for shard in range(2):
        name = example_format.shard_name("validation", shard, 2)
        example_format.write_shard(str(directory / name), examples[shard * 3:shard * 3 + 3])
        names.append(name)
    example_format.write_class_index(
        str(directory), [f"colour{i}" for i in range(10)], 0,
        splits={"validation": {"num_examples": 6, "shards": {n: 3 for n in names}}})
    return directory


@pytest.fixture()
def parsed_flags():
    """Parses arguments into the evaluate command's flags, in this process (no subprocess)."""
    from polynet_tf import evaluate

    def parse(*args):
        evaluate.FLAGS.unparse_flags()
        evaluate.FLAGS(["evaluate", "--noprogress", *args])
        return evaluate.FLAGS

    yield parse
    evaluate.FLAGS.unparse_flags()
