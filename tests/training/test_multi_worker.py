"""Two worker processes on localhost, driven through the CLI as a user would."""

import os
import re
import signal
import time

import numpy as np
import pytest

from polynet_tf.loading import load_model

from tests.training.conftest import free_ports, launch, overrides, train_command

pytestmark = pytest.mark.slow

STEPS = {"trainer.steps_per_loop": 1, "runtime.collective_timeout_seconds": 30,
         "runtime.startup_timeout_seconds": 120, "train_data.global_batch_size": 16}


def _final_loss(log_path):
    text = open(log_path).read()
    match = re.search(r"final step (\d+): loss ([0-9.]+)", text)
    assert match, text[-3000:]
    return int(match.group(1)), float(match.group(2))


def _run_workers(model_dir, params, tmp_path, tag, count=2):
    hosts = [f"localhost:{port}" for port in free_ports(count)]
    processes = [launch(train_command(model_dir, params, worker_hosts=hosts, task_index=i),
                        tmp_path / f"{tag}_{i}.log") for i in range(count)]
    return processes


def test_two_workers_survive_a_killed_worker_and_resume(synthetic_shards, tmp_path):
    # What two workers compute (equal to two replicas in one process) is
    # test_replicas.py's; here: a killed worker, and the same command resumes.
    # Each update accumulates 2 micro-batches of 8 and moves an EMA of the weights.
    params = overrides(synthetic_shards, **dict(STEPS, **{
        "trainer.train_steps": 12, "trainer.checkpoint_interval": 4,
        "train_data.global_batch_size": 8, "trainer.accumulation_steps": 2,
        "trainer.ema_decay": 0.9}))
    # Two workers; kill worker 1 once the step-4 checkpoint exists.
    model_dir = tmp_path / "multi"
    workers = _run_workers(model_dir, params, tmp_path, "first")
    checkpoint = model_dir / "checkpoints" / "ckpt-4.index"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and workers[0].poll() is None:
        time.sleep(0.5)
    assert checkpoint.exists(), open(tmp_path / "first_0.log").read()[-3000:]
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait(timeout=60)
    # The survivor must stop with an error (not hang, not claim success).
    code = workers[0].wait(timeout=300)
    log0 = open(tmp_path / "first_0.log").read()
    assert code != 0, log0[-3000:]
    assert "final step 12" not in log0
    killed_at = max(int(m) for m in re.findall(r"ckpt-(\d+)\.index", " ".join(
        os.listdir(model_dir / "checkpoints"))))

    # Restart both with the same command: resume from the last checkpoint and finish.
    workers = _run_workers(model_dir, params, tmp_path, "second")
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, open(tmp_path / f"second_{index}.log").read()[-3000:]
    log = open(tmp_path / "second_0.log").read()
    resumed = int(re.search(r"Resumed from \S+ckpt-(\d+) at step (\d+)", log).group(2))
    assert resumed == killed_at >= 4  # lost at most the checkpoint interval
    step, loss = _final_loss(tmp_path / "second_0.log")
    assert step == 12 and 0 < loss < 10, loss
    assert "final step" not in open(tmp_path / "second_1.log").read()  # the chief's alone
    # The EMA went through the kill and the resume: saved beside the raw weights (what
    # evaluation and export load by default), finite and apart from them.
    kernels = {kind: load_model(checkpoint=str(model_dir), weights_kind=kind).model.get_layer(
        "stem").weights[0].numpy() for kind in ("ema", "raw")}
    assert np.all(np.isfinite(kernels["ema"]))
    assert not np.array_equal(kernels["ema"], kernels["raw"])


def test_an_unreachable_peer_is_an_error_not_a_hang(synthetic_shards, tmp_path):
    params = overrides(synthetic_shards, **dict(STEPS, **{
        "trainer.train_steps": 2, "runtime.startup_timeout_seconds": 10}))
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    worker = launch(train_command(tmp_path / "alone", params, worker_hosts=hosts, task_index=0),
                    tmp_path / "alone.log")
    start = time.time()
    code = worker.wait(timeout=180)
    log = open(tmp_path / "alone.log").read()
    assert code != 0
    assert time.time() - start < 120
    assert "not every worker connected within 10 s" in log
    assert hosts[1] in log


def test_missing_data_files_are_named(tmp_path):
    command = train_command(tmp_path / "run", "train_data.file_pattern=/no/such/train-*,"
                            "eval_data.file_pattern=/no/such/val-*")
    process = launch(command, tmp_path / "missing.log")
    assert process.wait(timeout=120) == 2
    assert "No files match train_data.file_pattern='/no/such/train-*'" in open(
        tmp_path / "missing.log").read()
