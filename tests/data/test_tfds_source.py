"""Tests of TFDS sources, on a tiny TFDS builder defined here (no download)."""


import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from polynet_tf.data import DataConfig, build_dataset  # noqa: E402
from tests.data.conftest import FakeInputContext, collect, image_array  # noqa: E402

_NUM_TRAIN = 12


class PolynetTinyImages(tfds.core.GeneratorBasedBuilder):
    """12 train + 4 test PNG images in 3 classes, generated in memory."""

    # TFDS 4.9.10 looks for a builder's code with the `importlib_resources`
    # backport (not installed on Python >= 3.9) when its module is inside a
    # package; a one-part module name takes the plain-file path instead.
    __module__ = "polynet_tiny_images_builder"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=3),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {"train": self._generate_examples(0, _NUM_TRAIN),
                "test": self._generate_examples(100, 4)}

    def _generate_examples(self, start, count):
        for number in range(start, start + count):
            yield number, {"image": image_array(18 + number % 3, 24, seed=number),
                           "label": number % 3,
                           "file_name": f"img{number}.png"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tfds"))
    PolynetTinyImages(data_dir=directory).download_and_prepare()
    return directory


def _config(data_dir, **overrides):
    values = dict(tfds_name="polynet_tiny_images", tfds_data_dir=data_dir,
                  image_size=16, global_batch_size=4, seed=2, deterministic=True)
    values.update(overrides)
    return DataConfig(**values)


def test_evaluation_reads_every_image_with_its_label(data_dir):
    images, labels = collect(build_dataset(_config(data_dir, tfds_split="test",
                                                   is_training=False)))
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32
    assert sorted(labels.tolist()) == sorted(n % 3 for n in range(100, 104))


def test_training_is_deterministic_and_epochs_cover_the_split(data_dir):
    config = _config(data_dir, num_epochs=2)
    first = collect(build_dataset(config))
    again = collect(build_dataset(config))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[0].shape == (2 * _NUM_TRAIN, 16, 16, 3)
    assert np.bincount(first[1]).tolist() == [8, 8, 8]


def test_resume_skips_records_of_earlier_epochs(data_dir):
    full = collect(build_dataset(_config(data_dir)), max_batches=8)[1]
    resumed = collect(build_dataset(_config(data_dir), skip_steps=5), max_batches=3)[1]
    np.testing.assert_array_equal(resumed, full[20:])


def test_workers_split_the_records(data_dir):
    # 11 records between 3 workers: record sharding of a single TFDS file.
    config = _config(data_dir, is_training=False, global_batch_size=3,
                     tfds_split="train[:11]")
    counts = []
    for worker in range(3):
        images, _ = collect(build_dataset(config, FakeInputContext(3, worker)))
        counts.append(len(images))
    assert counts == [4, 4, 3]


def test_missing_feature_is_named(data_dir):
    with pytest.raises(ValueError, match="no feature 'picture'"):
        build_dataset(_config(data_dir, tfds_image_key="picture"))
