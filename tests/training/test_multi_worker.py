"""Worker processes on localhost, driven through the CLI as a user would.

Two workers that survive a killed worker and resume: test_sigterm.py (the same job
is then preempted).
"""

import time

import pytest

from tests.training.conftest import free_ports, launch, overrides, train_command

pytestmark = pytest.mark.slow

STEPS = {"trainer.steps_per_loop": 1, "runtime.collective_timeout_seconds": 30,
         "runtime.startup_timeout_seconds": 120, "train_data.global_batch_size": 16}


def test_an_unreachable_peer_is_an_error_not_a_hang(synthetic_shards, tmp_path):
    params = overrides(synthetic_shards, **dict(STEPS, **{
        # The test provokes this timeout: a short one (any positive value is accepted).
        "trainer.train_steps": 2, "runtime.startup_timeout_seconds": 1}))
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    worker = launch(train_command(tmp_path / "alone", params, worker_hosts=hosts, task_index=0),
                    tmp_path / "alone.log")
    start = time.time()
    code = worker.wait(timeout=180)
    log = open(tmp_path / "alone.log").read()
    assert code != 0
    assert time.time() - start < 120
    assert "not every worker connected within 1 s" in log
    assert hosts[1] in log


def test_missing_data_files_are_named(tmp_path):
    command = train_command(tmp_path / "run", "train_data.file_pattern=/no/such/train-*,"
                            "eval_data.file_pattern=/no/such/val-*")
    process = launch(command, tmp_path / "missing.log")
    assert process.wait(timeout=120) == 2
    assert "No files match train_data.file_pattern='/no/such/train-*'" in open(
        tmp_path / "missing.log").read()
