"""One worker, through the CLI: SIGTERM saves the step reached; the same command resumes."""

import glob
import os
import re
import signal
import time

import pytest
import tensorflow as tf

from tests.training.conftest import launch, overrides, train_command

pytestmark = pytest.mark.slow

TRAIN_STEPS = 60


def _last_summary_step(model_dir):
    """The highest step in the training summaries (written after every loop), or -1."""
    step = -1
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(path):
                step = max(step, tf.compat.v1.Event.FromString(record.numpy()).step)
        except tf.errors.DataLossError:
            pass  # the writer is in the middle of a record
    return step


def _checkpoint_steps(model_dir):
    names = os.listdir(os.path.join(model_dir, "checkpoints"))
    return sorted(int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)\.index$").match, names)
                  if m)


def test_sigterm_saves_the_step_reached_and_the_same_command_resumes(synthetic_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    # No checkpoint is due before the end: the only one mid-run is SIGTERM's.
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": TRAIN_STEPS, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": 1000, "train_data.global_batch_size": 16})
    command = train_command(model_dir, params)
    process = launch(command, tmp_path / "first.log")
    deadline = time.time() + 600
    while _last_summary_step(model_dir) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, open(tmp_path / "first.log").read()[-3000:]
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=300)
    log = open(tmp_path / "first.log").read()
    assert code == 143, log[-3000:]  # stopped on purpose, after saving
    saved = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+) and stopped", log).group(1))
    assert 3 <= saved < TRAIN_STEPS
    assert _checkpoint_steps(model_dir) == [saved]
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest.endswith(f"ckpt-{saved}")
    assert tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == saved
    assert "final step" not in log

    process = launch(command, tmp_path / "second.log")
    code = process.wait(timeout=600)
    log = open(tmp_path / "second.log").read()
    assert code == 0, log[-3000:]
    assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", log), log[-3000:]
    assert f"final step {TRAIN_STEPS}:" in log
    assert _checkpoint_steps(model_dir) == [saved, TRAIN_STEPS]
