"""SIGTERM: every worker saves the same step, one step after the signal, exits 143; resume.

Also a killed worker: the survivor stops with an error and the same command resumes; and
bad records skipped on the way are counted.
"""

import glob
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.configs import load_experiment
from polynet_tf.loading import load_model
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, free_ports, launch, overrides, train_command
from tests.training.synthetic_data import write_dataset

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
        time.sleep(0.5)  # each look reads the events files with tf.data
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


def _two_workers(model_dir, params, tmp_path, tag):
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    return [launch(train_command(model_dir, params, worker_hosts=hosts, task_index=i),
                   tmp_path / f"{tag}_{i}.log") for i in range(2)]


def _sigterm_saves_one_step_on_both(workers, to, model_dir, tmp_path, tag, steps, pause):
    """SIGTERM to workers `to` once both train; checks what both saved and did; the step.

    Both must save the same step, write only that checkpoint (to those
    already there), leave no temporary copy, exit 143 promptly once the
    checkpoint is written (they no longer wait on the coordination service:
    that took 20-48 s), and print no traceback.
    """
    before = _checkpoint_steps(model_dir)
    for i in range(2):  # both are in the training loop (TensorFlow's handler is made there)
        _wait_for(tmp_path / f"{tag}_{i}.log", "PreemptionCheckpointHandler initialized",
                  workers)
    time.sleep(pause)
    for i in to:
        workers[i].send_signal(signal.SIGTERM)
    appeared, exited = {}, {}
    deadline = time.time() + 600
    while len(exited) < 2 and time.time() < deadline:
        for step in _checkpoint_steps(model_dir):
            appeared.setdefault(step, time.time())
        for i, worker in enumerate(workers):
            if i not in exited and worker.poll() is not None:
                exited[i] = time.time()
        time.sleep(0.05)
    for step in _checkpoint_steps(model_dir):
        appeared.setdefault(step, time.time())
    logs = [open(tmp_path / f"{tag}_{i}.log").read() for i in range(2)]
    assert [w.wait(timeout=60) for w in workers] == [143, 143], [log[-2000:] for log in logs]
    saved = [int(re.search(rf"task {i}: saved the checkpoint of step (\d+) after a SIGTERM",
                           log).group(1)) for i, log in enumerate(logs)]
    assert saved[0] == saved[1] and max(before, default=0) < saved[0] < steps, (saved, before)
    assert _checkpoint_steps(model_dir) == before + [saved[0]]
    assert not glob.glob(os.path.join(model_dir, ".worker_tmp", "*", "*"))
    assert max(exited.values()) - appeared[saved[0]] < 10
    assert "Traceback" not in logs[0] + logs[1]
    return saved[0]


def test_sigterm_to_both_of_two_workers_saves_one_step_on_both(synthetic_shards, tmp_path):
    # SIGTERM to one of two workers, and the resume after it:
    # test_a_killed_worker_then_a_sigterm_to_the_other_and_the_same_command_resumes.
    steps = 20
    # One loop covers the whole run: the step, not the loop, must bound the save.
    params = overrides(synthetic_shards, **{
        "trainer.train_steps": steps, "trainer.steps_per_loop": steps,
        "trainer.checkpoint_interval": 1000, "trainer.summary_interval": 1000,
        "train_data.global_batch_size": 16, "runtime.collective_timeout_seconds": 120,
        "runtime.startup_timeout_seconds": 180})
    model_dir = tmp_path / "run"
    workers = _two_workers(model_dir, params, tmp_path, "first")
    _sigterm_saves_one_step_on_both(workers, [0, 1], model_dir, tmp_path, "first", steps, 3)


def test_a_killed_worker_then_a_sigterm_to_the_other_and_the_same_command_resumes(
        tmp_path):
    # One job, three launches of the same command: worker 1 killed (the survivor
    # stops with an error); resumed, then SIGTERM to worker 1 alone (both save one
    # step); resumed again to the end. What two workers compute (equal to two
    # replicas in one process) is test_replicas.py's. Each update accumulates 2
    # micro-batches of 8 and moves an EMA of the weights. Training record 5 (record 1
    # of shard 1, read by worker 1 alone) is not an image: skipped, counted.
    steps, interval = 40, 4
    shards = write_dataset(str(tmp_path / "data"), num_train=256, num_val=64,
                           bad_train_records={5: "garbage"})
    bad_file = os.path.join(str(tmp_path / "data"), "train-00001-of-00004")
    params = overrides(shards, **{
        "trainer.train_steps": steps, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": interval, "trainer.max_checkpoints": 20,
        "train_data.global_batch_size": 8, "trainer.accumulation_steps": 2,
        "train_data.on_error": "skip", "trainer.ema_decay": 0.9,
        "runtime.collective_timeout_seconds": 30, "runtime.startup_timeout_seconds": 120})
    model_dir = tmp_path / "run"
    # Kill worker 1 once the step-4 checkpoint exists.
    workers = _two_workers(model_dir, params, tmp_path, "first")
    deadline = time.time() + 600
    while interval not in _checkpoint_steps(model_dir) and time.time() < deadline and (
            workers[0].poll() is None):
        time.sleep(0.5)
    assert interval in _checkpoint_steps(model_dir), open(tmp_path / "first_0.log").read()[-3000:]
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait(timeout=60)
    # The survivor must stop with an error (not hang, not claim success).
    code = workers[0].wait(timeout=300)
    log0 = open(tmp_path / "first_0.log").read()
    assert code != 0, log0[-3000:]
    assert "final step" not in log0
    killed_at = _checkpoint_steps(model_dir)[-1]

    # The same command resumes from the last checkpoint (lost at most the
    # checkpoint interval); there SIGTERM to worker 1 alone stops both.
    workers = _two_workers(model_dir, params, tmp_path, "second")
    saved = _sigterm_saves_one_step_on_both(workers, [1], model_dir, tmp_path, "second", steps,
                                            1)
    log = open(tmp_path / "second_0.log").read()
    resumed = int(re.search(r"Resumed from \S+ckpt-(\d+) at step (\d+)", log).group(2))
    assert resumed == killed_at >= interval
    assert "final step" not in log
    # A stale copy in the worker's temporary directory is never restored.
    stale = os.path.join(model_dir, ".worker_tmp", "worker_1")
    os.makedirs(stale, exist_ok=True)
    with open(os.path.join(stale, "checkpoint"), "w") as handle:
        handle.write('model_checkpoint_path: "ckpt-999"\n')

    # The same command resumes from SIGTERM's checkpoint and finishes, through a
    # whole epoch of worker 1's 128 records (8 a step).
    assert steps - saved >= 16, saved
    before = _checkpoint_steps(model_dir)
    workers = _two_workers(model_dir, params, tmp_path, "third")
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, open(tmp_path / f"third_{index}.log").read()[-3000:]
    log = open(tmp_path / "third_0.log").read()
    assert re.search(rf"Resumed from \S+ckpt-{saved} at step {saved}\b", log), log[-3000:]
    loss = float(re.search(rf"final step {steps}: loss ([0-9.]+)", log).group(1))
    assert 0 < loss < 10, loss
    assert "final step" not in open(tmp_path / "third_1.log").read()  # the chief's alone
    assert _checkpoint_steps(model_dir) == before + [
        step for step in range(interval, steps + 1, interval) if step > saved]
    assert not os.path.exists(os.path.join(stale, "checkpoint"))
    # Each time record 1 of the bad shard came round in the last run it was
    # logged, and counted.
    log = open(tmp_path / "third_1.log").read()
    met = re.findall(rf"skipped bad_record: {re.escape(bad_file)} record 1: could not be "
                     "parsed", log)
    summary = re.search(r"note: task 1: the input pipeline skipped (\d+) bad record\(s\)", log)
    assert met and summary and int(summary.group(1)) == len(met), log[-2000:]
    assert "skipped bad_record" not in open(tmp_path / "third_0.log").read()  # not its shard
    # The EMA went through the kill, the preemption and the resumes: saved beside the
    # raw weights (what evaluation and export load by default), finite and apart from them.
    kernels = {kind: load_model(checkpoint=str(model_dir), weights_kind=kind).model.get_layer(
        "stem").weights[0].numpy() for kind in ("ema", "raw")}
    assert np.all(np.isfinite(kernels["ema"]))
    assert not np.array_equal(kernels["ema"], kernels["raw"])
