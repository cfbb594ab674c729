"""`--mode eval` on a training run: the run's params.yaml is read, never written."""

import os

import pytest
import tensorflow as tf

from polynet_tf import runs
from polynet_tf.configs import load_experiment, write_yaml
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, launch, overrides, train_command

pytestmark = pytest.mark.slow


def test_eval_reads_params_yaml_and_leaves_it_alone(synthetic_shards, tmp_path):
    # The run, made in this process as `--mode=train` makes it (params.yaml, then a
    # checkpoint): its step-1 checkpoint holds the initial weights, with no traced step.
    run = tmp_path / "run"
    config = load_experiment([TINY_CONFIG], overrides(synthetic_shards, **{
        "trainer.train_steps": 1, "train_data.global_batch_size": 8}), mode="train")
    trainer = Trainer(config, str(run), tf.distribute.OneDeviceStrategy("/cpu:0"))
    write_yaml(config.to_dict(), runs.params_path(str(run)))
    trainer.global_step.assign(1)
    trainer.save()
    params = run / "params.yaml"
    before, stat = params.read_bytes(), os.stat(params)
    # The flags ask for another network (5 classes, not the run's 4) and a
    # smaller evaluation batch.
    evaluate = launch(train_command(run, overrides(synthetic_shards, **{
        "model.num_classes": 5, "eval_data.global_batch_size": 16}), mode="eval"),
        tmp_path / "eval.log")
    code = evaluate.wait(timeout=600)
    log = open(tmp_path / "eval.log").read()
    assert code == 0, log[-3000:]
    # The run's network is evaluated (its checkpoint restores into it), and
    # the log says which flag value was not used.
    assert "not used from --config/--params_override: model.num_classes=5 (params.yaml: 4)" \
        in log
    assert "final step 1:" in log and "num_images 64" in log
    assert params.read_bytes() == before
    assert os.stat(params).st_mtime_ns == stat.st_mtime_ns
