"""--mode eval without a checkpoint, labels out of range, GZIP shards."""

import struct
import zlib

import pytest
import tensorflow as tf

from polynet_tf.configs import ConfigError, load_experiment
from polynet_tf.data import DataConfig
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, launch, overrides, train_command


def _trainer(shards, model_dir, **values):
    config = load_experiment([TINY_CONFIG], overrides(shards, **values), mode="train_and_eval")
    return Trainer(config, str(model_dir), tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_eval_without_a_checkpoint_is_an_error(synthetic_shards, tmp_path):
    process = launch(train_command(tmp_path / "empty", overrides(synthetic_shards), mode="eval"),
                     tmp_path / "eval.log")
    assert process.wait(timeout=300) == 2
    log = open(tmp_path / "eval.log").read()
    assert "--mode=eval found no checkpoint in" in log
    assert "top1" not in log


def test_a_label_the_model_cannot_output_stops_training_naming_the_file(synthetic_shards,
                                                                         tmp_path):
    # The shards hold labels 0..3 and their class index says 4 classes; the
    # model has 3 outputs: label 3 would become an all-zero target.
    trainer = _trainer(synthetic_shards, tmp_path, **{
        "model.num_classes": 3, "trainer.train_steps": 2, "trainer.steps_per_loop": 2})
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"label 3 .* of file \S+train-0000\d-of-00004 record \d+ "
                             r"is outside \[0, 3\)"):
        trainer.train()


def test_data_with_more_classes_than_the_model_is_refused(synthetic_shards):
    with pytest.raises(ConfigError, match="'train_data.num_classes' is 5 but the model has"):
        load_experiment([TINY_CONFIG], overrides(synthetic_shards, **{
            "train_data.num_classes": 5, "model.num_classes": 4}))


def _records_before_truncation(compressed):
    """Complete TFRecord records in a truncated GZIP stream (Python's zlib, not TF)."""
    data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed)
    count, offset = 0, 0
    while offset + 12 <= len(data):
        length = struct.unpack("<Q", data[offset:offset + 8])[0]
        if offset + 12 + length + 4 > len(data):
            break
        offset += 12 + length + 4
        count += 1
    return count


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_truncated_gzip_shard_follows_the_corrupt_record_policy(tmp_path, policy):
    from polynet_tf.data import build_dataset, example_format
    from polynet_tf.data.pipeline import PipelineStats
    from tests.data.conftest import encode, image_array

    options = tf.io.TFRecordOptions(compression_type="GZIP")
    paths = [str(tmp_path / example_format.shard_name("train", shard, 2)) for shard in range(2)]
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(path, options) as writer:
            for number in range(20 * shard, 20 * shard + 20):
                writer.write(example_format.make_example(
                    encode(image_array(24, 24, seed=number)), number % 7, "c", 24, 24,
                    f"{number}.jpg").SerializeToString())
    with open(paths[1], "rb") as handle:
        data = handle.read()
    truncated = data[:len(data) // 2]
    with open(paths[1], "wb") as handle:
        handle.write(truncated)
    intact = _records_before_truncation(truncated)
    assert 0 < intact < 20
    config = DataConfig(file_pattern=str(tmp_path / "train-*"), compression_type="GZIP",
                        is_training=False, image_size=8, global_batch_size=4, on_error=policy)
    stats = PipelineStats()
    dataset = build_dataset(config, stats=stats)
    if policy == "fail":
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"GZIP TFRecord file \S+train-00001-of-00002 is corrupt or "
                                 rf"truncated at record {intact}\b"):
            for _ in dataset:
                pass
    else:
        count = sum(int(labels.shape[0]) for _, labels in dataset)
        assert count == 20 + intact
        assert stats.as_dict()["corrupt_files"] == 1
        kind, source, index, _ = stats.problems[0]
        assert (kind, source.endswith("train-00001-of-00002"), index) == (
            "corrupt_file", True, intact)
