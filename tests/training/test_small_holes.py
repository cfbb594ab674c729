"""--mode eval without a checkpoint, summary_interval, labels out of range, GZIP + skip."""

import glob
import os

import pytest
import tensorflow as tf

from polynet_tf.configs import ConfigError, load_experiment
from polynet_tf.data import DataConfig
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, launch, overrides, train_command


def _trainer(shards, model_dir, **values):
    config = load_experiment([TINY_CONFIG], overrides(shards, **values), mode="train_and_eval")
    return Trainer(config, str(model_dir), tf.distribute.OneDeviceStrategy("/cpu:0"))


def _summary_steps(model_dir):
    steps = set()
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if event.summary.value:
                steps.add(event.step)
    return sorted(steps)


def test_eval_without_a_checkpoint_is_an_error(synthetic_shards, tmp_path):
    process = launch(train_command(tmp_path / "empty", overrides(synthetic_shards), mode="eval"),
                     tmp_path / "eval.log")
    assert process.wait(timeout=300) == 2
    log = open(tmp_path / "eval.log").read()
    assert "--mode=eval found no checkpoint in" in log
    assert "top1" not in log


def test_summaries_follow_summary_interval(synthetic_shards, tmp_path):
    trainer = _trainer(synthetic_shards, tmp_path, **{
        "trainer.train_steps": 7, "trainer.steps_per_loop": 4,
        "trainer.checkpoint_interval": 100, "trainer.summary_interval": 3})
    trainer.train()
    assert _summary_steps(str(tmp_path)) == [3, 6, 7]  # and the last step


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


def test_skipping_corrupt_records_of_compressed_shards_is_refused():
    config = DataConfig(file_pattern="/data/train-*", compression_type="GZIP", on_error="skip")
    with pytest.raises(ValueError, match="on_error='skip' cannot be applied to "
                                         "compression_type='GZIP'"):
        config.validate()
    DataConfig(file_pattern="/data/train-*", compression_type="ZLIB").validate()  # fail: allowed
