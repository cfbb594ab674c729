"""Evaluation data from a TFDS split, and the crop-box figure."""

import numpy as np
import pytest
from PIL import Image

from polynet_tf.evaluation import data, get_protocol
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.figure import save_crops_figure
from polynet_tf.evaluation.model_sources import keras_scorer
from tests.evaluation import helpers
from tests.evaluation.conftest import COLOUR_IMAGES, colour_labels

tfds = pytest.importorskip("tensorflow_datasets")


class PolynetEvalColours(tfds.core.GeneratorBasedBuilder):
    """The solid-colour images of the TFRecord tests, as a TFDS test split (no download)."""

    # A one-part module name: TFDS 4.9.10 otherwise needs `importlib_resources`
    # to find the builder's code (see tests/data/test_tfds_source.py).
    __module__ = "polynet_eval_colours_builder"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=[f"colour{i}" for i in range(10)]),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        labels, _, _ = colour_labels()
        for number, ((rgb, _), label) in enumerate(zip(COLOUR_IMAGES, labels)):
            yield number, {"image": helpers.solid(40, 56, rgb), "label": label}


def test_tfds_split_gives_the_known_accuracy(tmp_path):
    PolynetEvalColours(data_dir=str(tmp_path)).download_and_prepare()
    records = data.tfds_records("polynet_eval_colours", "test", data_dir=str(tmp_path))
    assert records.num_images == 6
    assert records.class_names == [f"colour{i}" for i in range(10)]
    protocol = get_protocol("googlenet144", crop_size=24)
    report = Evaluator([keras_scorer(helpers.colour_model())], protocol).evaluate(
        data.crops_dataset(records.dataset, protocol, 3), records.num_images,
        records.class_names, progress=False)
    _, top1, top5 = colour_labels()
    assert report["num_images"] == 6
    assert report["top1_accuracy"] == pytest.approx(top1)
    assert report["top5_accuracy"] == pytest.approx(top5)


@pytest.mark.parametrize("name", ["single", "polynet_multicrop"])
def test_crops_figure_is_a_whole_png(tmp_path, name):
    path = tmp_path / f"{name}.png"
    save_crops_figure(helpers.photo(300, 400), get_protocol(name), str(path))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # the photo and boxes, not a blank page
