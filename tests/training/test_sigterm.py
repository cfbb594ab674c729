"""One worker, through the CLI: SIGTERM saves the step reached; the same command resumes."""

import glob
import os
import re
import signal
import time

import pytest
import tensorflow as tf

from tests.training.conftest import free_ports, launch, overrides, train_command

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
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1,
        "train_data.global_batch_size": 16})
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


def test_sigterm_to_one_of_two_workers_saves_one_step_on_all_and_they_resume(
        synthetic_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    steps = 30
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": steps, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1,
        "train_data.global_batch_size": 16, "runtime.collective_timeout_seconds": 60,
        "runtime.startup_timeout_seconds": 120})
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    commands = [train_command(model_dir, params, worker_hosts=hosts, task_index=i)
                for i in range(2)]
    workers = [launch(c, tmp_path / f"first_{i}.log") for i, c in enumerate(commands)]
    deadline = time.time() + 600
    while (_last_summary_step(model_dir) < 3 and workers[0].poll() is None
           and time.time() < deadline):
        time.sleep(0.2)
    assert workers[1].poll() is None, open(tmp_path / "first_1.log").read()[-3000:]
    workers[1].send_signal(signal.SIGTERM)  # not the chief
    codes = [w.wait(timeout=300) for w in workers]
    logs = [open(tmp_path / f"first_{i}.log").read() for i in range(2)]
    assert codes == [143, 143], [log[-2000:] for log in logs]
    saved = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+) and stopped",
                          logs[0]).group(1))
    assert 3 <= saved < steps
    assert _checkpoint_steps(model_dir) == [saved]
    assert not glob.glob(os.path.join(model_dir, ".worker_tmp", "*", "*"))
    # A stale copy in the worker's temporary directory is never restored.
    stale = os.path.join(model_dir, ".worker_tmp", "worker_1")
    os.makedirs(stale)
    with open(os.path.join(stale, "checkpoint"), "w") as handle:
        handle.write('model_checkpoint_path: "ckpt-999"\n')

    workers = [launch(c, tmp_path / f"second_{i}.log") for i, c in enumerate(commands)]
    codes = [w.wait(timeout=600) for w in workers]
    logs = [open(tmp_path / f"second_{i}.log").read() for i in range(2)]
    assert codes == [0, 0], [log[-2000:] for log in logs]
    assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", logs[0]), logs[0][-3000:]
    assert f"final step {steps}:" in logs[0]
    assert _checkpoint_steps(model_dir) == [saved, steps]
    assert not os.path.exists(os.path.join(stale, "checkpoint"))
