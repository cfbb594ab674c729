"""Several replicas in one process (two logical CPUs), and two workers against them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import ROOT, free_ports, launch, overrides, train_command
from tests.training.synthetic_data import write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def odd_shards(tmp_path_factory):
    """30 validation images: the replicas' last batches are uneven."""
    return write_dataset(str(tmp_path_factory.mktemp("odd")), num_train=128, num_val=30)


def _replica_check(case, shards, tmp_path):
    out = tmp_path / f"{case}.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.training.replica_checks", case, str(out),
         json.dumps(list(shards)), str(tmp_path / case)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out


def _result(process, out):
    log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_saved_and_evaluated_batch_norm_statistics_are_the_replica_mean(odd_shards, tmp_path):
    result = _result(*_replica_check("batch_norm_and_evaluation", odd_shards, tmp_path))
    assert len(result["names"]) > 50
    # The replicas were fed different images: their statistics differ ...
    assert min(result["halves_differ"]) > 1e-4
    assert min(result["replica_copies_differed"]) > 1e-4
    # ... and what a checkpoint and an export hold is their mean.
    assert max(result["saved_minus_mean"]) < 1e-5
    assert max(result["exported_minus_mean"]) < 1e-5
    # Evaluation on both replicas reads every validation image once and agrees
    # with one device on the same weights.
    mirrored, single = result["mirrored_eval"], result["single_eval"]
    assert mirrored["num_images"] == single["num_images"] == 30
    assert mirrored["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert mirrored["top1"] == single["top1"]


def _checkpoint_weights(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir / "checkpoints")))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


def test_two_workers_equal_two_replicas_and_synchronized_batch_norm_equals_one(
        synthetic_shards, tmp_path):
    steps = 10
    params = overrides(synthetic_shards, **{
        "train_data.global_batch_size": 16, "trainer.train_steps": steps,
        "trainer.steps_per_loop": 5, "trainer.checkpoint_interval": steps,
        "runtime.deterministic_ops": True, "runtime.collective_timeout_seconds": 60,
        "runtime.startup_timeout_seconds": 120})
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    workers = [launch(train_command(tmp_path / "workers", params, worker_hosts=hosts,
                                    task_index=i), tmp_path / f"worker_{i}.log")
               for i in range(2)]
    mirrored = _replica_check("equivalence", synthetic_shards, tmp_path)
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, open(tmp_path / f"worker_{index}.log").read()[-3000:]
    result = _result(*mirrored)
    synced = _result(*_replica_check("synchronized", synthetic_shards, tmp_path))
    two_workers = _checkpoint_weights(tmp_path / "workers")
    two_replicas = _checkpoint_weights(tmp_path / "equivalence")
    assert two_workers.keys() == two_replicas.keys() and len(two_workers) > 100
    for name, value in two_replicas.items():
        if "step" in name:
            continue
        scale = max(float(np.max(np.abs(value))), 1e-6)
        np.testing.assert_allclose(two_workers[name], value, rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=name)
    # The test can fail: ten steps moved the weights far more than the tolerance.
    assert result["largest_relative_change"] > 1e-2
    assert synced["sync_steps"] == [steps, steps]
    worst = max(synced["sync_two_minus_one"].items(), key=lambda item: item[1])
    assert worst[1] < 1e-5, worst
