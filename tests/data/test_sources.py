"""Tests of `polynet_tf.data.sources`: file lists and compressed shards."""

import os

import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, build_dataset, example_format
from polynet_tf.data.sources import expand_file_pattern
from tests.data.conftest import collect, encode, image_array, write_shards


def test_patterns_skip_temporary_files_and_the_class_index(tmp_path):
    for name in ("train-00000-of-00002", "train-00001-of-00002", ".train-00001-of-00002.tmp-7",
                 "validation-00000-of-00001", "class_index.json"):
        (tmp_path / name).write_bytes(b"")
    everything = expand_file_pattern(f"{tmp_path}/*")
    assert [os.path.basename(p) for p in everything] == [
        "train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"]
    both = expand_file_pattern(f"{tmp_path}/validation-*, {tmp_path}/train-0000[01]*")
    assert len(both) == 3
    with pytest.raises(FileNotFoundError, match="'.*nothing-\\*' matched no TFRecord"):
        expand_file_pattern(f"{tmp_path}/train-*,{tmp_path}/nothing-*")


def test_gzip_shards_are_read(tmp_path):
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard in range(2):
        path = str(tmp_path / example_format.shard_name("train", shard, 2))
        with tf.io.TFRecordWriter(path, options) as writer:
            for number in range(3 * shard, 3 * shard + 3):
                writer.write(example_format.make_example(
                    encode(image_array(10, 12, seed=number)), number, "c", 10, 12,
                    f"{number}.jpg").SerializeToString())
    config = DataConfig(file_pattern=str(tmp_path / "train-*"), compression_type="GZIP",
                        is_training=False, image_size=8, global_batch_size=4)
    assert sorted(collect(build_dataset(config))[1].tolist()) == list(range(6))


def test_uncompressed_reader_counts_records_for_resume(tmp_path):
    write_shards(str(tmp_path), 5, 2)
    config = DataConfig(file_pattern=str(tmp_path / "train-*"), image_size=8,
                        global_batch_size=2, seed=0, deterministic=True)
    full = collect(build_dataset(config), max_batches=8)[1]
    # 7 steps x 2 = 14 records: one whole epoch of 10 (counted, no index) + 4.
    resumed = collect(build_dataset(config, skip_steps=7), max_batches=1)[1]
    assert resumed.tolist() == full[14:16].tolist()
