"""The continuous evaluator on a run's checkpoints, in this process."""

import json

import pytest
import tensorflow as tf

from polynet_tf import evaluate, runs
from polynet_tf.evaluation import continuous
from tests.evaluation.test_model_sources import tiny_run  # noqa: F401


@pytest.mark.slow  # about 50 s: the export of the best checkpoint
def test_each_checkpoint_once_the_best_exported_and_a_restart_skips_it(
        tiny_run, colour_shards, parsed_flags, tmp_path):  # noqa: F811
    model_dir, _ = tiny_run
    source = continuous.DataSource(str(colour_shards / "validation-*"))
    destination = str(tmp_path / "models" / "polynet")
    exported = []

    def export(entry):
        exported.append(continuous.export_checkpoint(entry, destination))
        return exported[-1]

    record = continuous.evaluate_continuously(str(model_dir), source, train_steps=1, timeout=60,
                                              on_new_best=export)
    assert record["finished"] and list(record["evaluated"]) == ["ckpt-1"]
    prefix = str(model_dir / "checkpoints" / "ckpt-1")
    assert record["best"]["checkpoint"] == prefix
    # The report is the evaluate command's on that checkpoint.
    report = json.loads((model_dir / "continuous_eval" / "ckpt-1.json").read_text())
    expected = evaluate.run(parsed_flags("--checkpoint", prefix, "--data_pattern",
                                         str(colour_shards / "validation-*"), "--output",
                                         str(tmp_path / "expected.json")))
    for key in ("num_images", "top1_accuracy", "top5_accuracy", "per_class", "protocol"):
        assert report[key] == expected[key], key
    assert report["num_images"] == 6 and report["step"] == 1
    top1 = runs.read_scalars(str(model_dir / "eval"))["top1"]
    assert top1 == [(1, pytest.approx(report["top1_accuracy"]))]
    # The best checkpoint as a SavedModel, version = its step.
    assert exported == [f"{destination}/1"] and record["best"]["export"] == exported[0]
    assert tf.saved_model.contains_saved_model(exported[0])
    # Restarted: nothing evaluated or exported again.
    stamp = (model_dir / "continuous_eval" / "ckpt-1.json").stat().st_mtime_ns
    again = continuous.evaluate_continuously(str(model_dir), source, train_steps=1, timeout=60,
                                             on_new_best=export)
    assert again["finished"] and again["evaluated"] == record["evaluated"]
    assert len(exported) == 1
    assert (model_dir / "continuous_eval" / "ckpt-1.json").stat().st_mtime_ns == stamp


def test_no_new_checkpoint_within_the_timeout_ends_the_wait(tiny_run, colour_shards):  # noqa: F811
    model_dir, _ = tiny_run
    source = continuous.DataSource(str(colour_shards / "validation-*"))
    record = continuous.evaluate_continuously(str(model_dir), source, train_steps=100,
                                              timeout=1)
    assert not record["finished"] and list(record["evaluated"]) == ["ckpt-1"]


def test_the_data_source_is_the_runs_eval_data_tfds_preparation_included():
    from polynet_tf.data.config import DataConfig  # noqa: PLC0415

    config = DataConfig(file_pattern="", tfds_name="imagenet2012", tfds_split="validation[:10%]",
                        tfds_data_dir="gs://bucket/tfds", tfds_manual_dir="gs://bucket/tars",
                        is_training=False)
    assert continuous.DataSource.from_data_config(config) == continuous.DataSource(
        "", "imagenet2012", "validation[:10%]", "gs://bucket/tfds", "gs://bucket/tars")


def test_checkpoint_step():
    assert continuous.checkpoint_step("gs://b/run/checkpoints/ckpt-600") == 600
    with pytest.raises(ValueError, match="not numbered by step"):
        continuous.checkpoint_step("/run/checkpoints/model")
