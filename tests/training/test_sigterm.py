"""SIGTERM: every worker saves the same step, one step after the signal, exits 143; resume."""

import glob
import os
import re
import signal
import time

import pytest
import tensorflow as tf

from polynet_tf.configs import load_experiment
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, free_ports, launch, overrides, train_command

pytestmark = pytest.mark.slow

TRAIN_STEPS = 30


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
    directory = os.path.join(model_dir, "checkpoints")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)\.index$").match, names)
                  if m)


def test_sigterm_saves_the_step_reached_and_the_same_command_resumes(synthetic_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    # No checkpoint is due before the end: the only one mid-run is SIGTERM's.
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": TRAIN_STEPS, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1,
        "train_data.global_batch_size": 16, "trainer.ema_decay": 0.9})
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
    # The EMA of the weights is saved with them.
    assert any(name.startswith("ema/averages/") for name, _ in tf.train.list_variables(latest))
    assert "final step" not in log

    process = launch(command, tmp_path / "second.log")
    code = process.wait(timeout=600)
    log = open(tmp_path / "second.log").read()
    assert code == 0, log[-3000:]
    assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", log), log[-3000:]
    assert f"final step {TRAIN_STEPS}:" in log
    assert _checkpoint_steps(model_dir) == [saved, TRAIN_STEPS]


def test_sigterm_inside_a_loop_saves_one_step_later(synthetic_shards, tmp_path):
    # One loop covers the whole run: the step, not the loop, must bound the save.
    config = load_experiment([TINY_CONFIG], overrides(synthetic_shards, **{
        "trainer.train_steps": 30, "trainer.steps_per_loop": 30,
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1000,
        "train_data.global_batch_size": 8}), mode="train")
    trainer = Trainer(config, str(tmp_path / "run"), tf.distribute.OneDeviceStrategy("/cpu:0"))
    signal_step = 4
    train_step = trainer._train_step

    def step_that_signals(images, labels):
        # SIGTERM while step `signal_step` is still running (inside the step's graph).
        totals = train_step(images, labels)

        def send(step):
            if int(step) == signal_step:
                os.kill(os.getpid(), signal.SIGTERM)
            return step

        with tf.control_dependencies([totals]):
            sent = tf.py_function(send, [trainer.global_step.read_value()], tf.int64)
        with tf.control_dependencies([sent]):
            return tf.identity(totals)

    trainer._train_step = step_that_signals
    with pytest.raises(SystemExit) as stopped:
        trainer.train()
    assert stopped.value.code == 143
    # The step in flight, then one more (a peer may already be in it), then the save.
    assert trainer.step == signal_step + 1
    assert _checkpoint_steps(tmp_path / "run") == [signal_step + 1]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back
    resumed = Trainer(config, str(tmp_path / "run"), tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert resumed.step == signal_step + 1


def _wait_for(path, text, processes, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.2)
    raise AssertionError(open(path).read()[-3000:])


def test_sigterm_to_one_or_all_of_two_workers_saves_one_step_on_all_and_they_resume(
        synthetic_shards, tmp_path):
    steps = 20
    # One loop covers the whole run: the step, not the loop, must bound the save.
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": steps, "trainer.steps_per_loop": steps,
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1000,
        "train_data.global_batch_size": 16, "runtime.collective_timeout_seconds": 120,
        "runtime.startup_timeout_seconds": 180})
    jobs = {"one": [1], "all": [0, 1]}  # whom SIGTERM goes to; the jobs run side by side
    commands, workers = {}, {}
    for job in jobs:
        hosts = [f"localhost:{port}" for port in free_ports(2)]
        commands[job] = [train_command(tmp_path / job, params, worker_hosts=hosts, task_index=i)
                         for i in range(2)]
        workers[job] = [launch(c, tmp_path / f"{job}_first_{i}.log")
                        for i, c in enumerate(commands[job])]
    for job in jobs:
        for i in range(2):  # both are in the training loop (TensorFlow's handler is made there)
            _wait_for(tmp_path / f"{job}_first_{i}.log", "PreemptionCheckpointHandler initialized",
                      workers[job])
        time.sleep(3)
        for i in jobs[job]:
            workers[job][i].send_signal(signal.SIGTERM)
    # Every worker exits promptly once the checkpoint is written (it no longer
    # waits on the coordination service: that took 20-48 s).
    written, exited = {}, {}
    deadline = time.time() + 600
    while len(exited) < 4 and time.time() < deadline:
        for job in jobs:
            if job not in written and _checkpoint_steps(tmp_path / job):
                written[job] = time.time()
            for i, worker in enumerate(workers[job]):
                if (job, i) not in exited and worker.poll() is not None:
                    exited[job, i] = time.time()
        time.sleep(0.05)
    for job in jobs:
        logs = [open(tmp_path / f"{job}_first_{i}.log").read() for i in range(2)]
        assert [w.wait(timeout=60) for w in workers[job]] == [143, 143], [
            log[-2000:] for log in logs]
        saved = [int(re.search(rf"task {i}: saved the checkpoint of step (\d+) after a SIGTERM",
                               log).group(1)) for i, log in enumerate(logs)]
        assert saved[0] == saved[1] and 1 <= saved[0] < steps, saved
        assert _checkpoint_steps(tmp_path / job) == [saved[0]]
        assert not glob.glob(os.path.join(tmp_path / job, ".worker_tmp", "*", "*"))
        assert max(exited[job, i] for i in range(2)) - written[job] < 10
        assert "Traceback" not in logs[0] + logs[1]
    # A stale copy in the worker's temporary directory is never restored.
    stale = os.path.join(tmp_path / "one", ".worker_tmp", "worker_1")
    os.makedirs(stale, exist_ok=True)
    with open(os.path.join(stale, "checkpoint"), "w") as handle:
        handle.write('model_checkpoint_path: "ckpt-999"\n')

    # The same command resumes (one pair: resuming does not depend on whom
    # the signal went to, and each pair costs two processes).
    resumed_jobs = ["one"]
    workers = {job: [launch(c, tmp_path / f"{job}_second_{i}.log")
                     for i, c in enumerate(commands[job])] for job in resumed_jobs}
    for job in resumed_jobs:
        codes = [w.wait(timeout=600) for w in workers[job]]
        logs = [open(tmp_path / f"{job}_second_{i}.log").read() for i in range(2)]
        assert codes == [0, 0], [log[-2000:] for log in logs]
        saved = _checkpoint_steps(tmp_path / job)[0]
        assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", logs[0])
        assert f"final step {steps}:" in logs[0]
        assert _checkpoint_steps(tmp_path / job) == [saved, steps]
    assert not os.path.exists(os.path.join(stale, "checkpoint"))
