"""Tests of `polynet_tf.data.example_format`, including existing ImageNet shards."""

import json
import os

import pytest
import tensorflow as tf

from polynet_tf.data import (DataConfig, build_dataset, make_example,
                             parse_example, read_class_index, write_class_index)
from tests.data.conftest import collect, encode, image_array


def _imagenet_tools_example(jpeg, label, synset, height, width, filename):
    """A record exactly as TensorFlow's build_imagenet_data.py writes it."""

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def bytes_(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/colorspace": bytes_(b"RGB"),
        "image/channels": ints([3]),
        "image/class/label": ints([label]),
        "image/class/synset": bytes_(synset.encode()),
        "image/class/text": bytes_(b"tench, Tinca tinca"),
        "image/object/bbox/xmin": floats([0.1]),
        "image/object/bbox/xmax": floats([0.9]),
        "image/object/bbox/ymin": floats([0.2]),
        "image/object/bbox/ymax": floats([0.8]),
        "image/object/bbox/label": ints([label]),
        "image/format": bytes_(b"JPEG"),
        "image/filename": bytes_(filename.encode()),
        "image/encoded": bytes_(jpeg),
    }))


@pytest.fixture(scope="module")
def imagenet_shards(tmp_path_factory):
    """Two shards named and filled like ImageNet's, labels 1..5, no class index."""
    directory = tmp_path_factory.mktemp("imagenet")
    number = 0
    for shard in range(2):
        path = str(directory / f"train-{shard:05d}-of-00002")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(5):
                jpeg = encode(image_array(30, 40, seed=number))
                label = number % 5 + 1
                writer.write(_imagenet_tools_example(
                    jpeg, label, f"n0000000{label}", 30, 40,
                    f"n0000000{label}_{number}.JPEG").SerializeToString())
                number += 1
    return str(directory)


def test_existing_imagenet_shards_read_with_label_offset_one(imagenet_shards):
    config = DataConfig(file_pattern=os.path.join(imagenet_shards, "train-*"),
                        is_training=False, image_size=12, global_batch_size=4,
                        label_offset=1, num_classes=5, cycle_length=1)
    images, labels = collect(build_dataset(config))
    assert images.shape == (10, 12, 12, 3)
    assert labels.tolist() == [n % 5 for n in range(10)]
    training = DataConfig(file_pattern=os.path.join(imagenet_shards, "train-*"),
                          image_size=12, global_batch_size=5, label_offset=1,
                          num_classes=5, seed=0, num_epochs=1)
    _, labels = collect(build_dataset(training))
    assert sorted(labels.tolist()) == sorted(n % 5 for n in range(10))


def test_forgotten_label_offset_is_reported(imagenet_shards):
    config = DataConfig(file_pattern=os.path.join(imagenet_shards, "train-*"),
                        is_training=False, image_size=12, global_batch_size=10,
                        num_classes=5)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"label 5 .*outside \[0, 5\).*label_offset=1"):
        collect(build_dataset(config))


def test_make_and_parse_round_trip():
    jpeg = encode(image_array(8, 8))
    record = make_example(jpeg, 7, "n01440764", 8, 8, "n01440764/a.JPEG").SerializeToString()
    encoded, label, filename = parse_example(tf.constant(record), label_offset=1)
    assert encoded.numpy() == jpeg and label.numpy() == 6 and label.dtype == tf.int32
    assert filename.numpy() == b"n01440764/a.JPEG"
    features = tf.train.Example.FromString(record).features.feature
    assert set(features) == {
        "image/encoded", "image/format", "image/class/label", "image/class/synset",
        "image/class/text", "image/height", "image/width", "image/colorspace",
        "image/channels", "image/filename"}
    # A record without a file name (other tools) still parses.
    bare = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": features["image/encoded"], "image/class/label": features[
            "image/class/label"]})).SerializeToString()
    assert parse_example(tf.constant(bare))[2].numpy() == b""


def test_class_index_round_trip_and_label_offset_default(tmp_path):
    write_class_index(str(tmp_path), ["a", "b"], 1, splits={"train": {
        "num_examples": 3, "shards": {"train-00000-of-00001": 3}}})
    index = read_class_index(str(tmp_path))
    assert index.classes == ["a", "b"] and index.label_offset == 1
    assert index.shard_sizes == {"train-00000-of-00001": 3}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    # The pipeline takes label_offset and num_classes from the index.
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for label in (1, 2, 1):
            writer.write(make_example(encode(image_array(8, 8)), label, "a", 8, 8,
                                      "x.jpg").SerializeToString())
    config = DataConfig(file_pattern=str(tmp_path / "train-*"), is_training=False,
                        image_size=8, global_batch_size=3)
    assert collect(build_dataset(config))[1].tolist() == [0, 1, 0]


def test_bad_class_index_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_tfrecords writes one"):
        read_class_index(str(tmp_path))
    (tmp_path / "class_index.json").write_text(json.dumps({"labels": []}))
    with pytest.raises(ValueError, match="'classes' list"):
        read_class_index(str(tmp_path))
    (tmp_path / "class_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_class_index(str(tmp_path / "class_index.json"))
