"""Several replicas in one process (two logical CPUs), and two workers against them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from polynet_tf.configs import load_experiment
from polynet_tf.grow.checkpoints import load_source_weights
from polynet_tf.models.factory import build_model
from tests.training.conftest import (
    ROOT, TINY_CONFIG, free_ports, launch, overrides, train_command)
from tests.training.equivalence import (
    EQUIVALENCE_STEPS, relative_update_difference, short_run)
from tests.training.overflow_checks import OVERFLOW_STEP, START_SCALE
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


def _assert_one_all_reduce(counts, name):
    """Two replicas: one all-reduce op each (the gradients travel in one pack);
    summing the gradients again in the optimizer would double it."""
    assert sum(counts.values()) == 2, (name, counts)


def test_saved_and_evaluated_batch_norm_statistics_are_the_replica_mean(odd_shards, tmp_path):
    result = _result(*_replica_check("batch_norm_and_evaluation", odd_shards, tmp_path))
    # Its step (float32, unclipped): one all-reduce per step.
    _assert_one_all_reduce(result["collectives"], "plain")
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


def _restored_weights(params, *model_dirs):
    """The model weights of each run's latest checkpoint, in `model.weights` order; their paths."""
    config = load_experiment([TINY_CONFIG], params, mode="train")
    model = build_model(config.model, image_size=config.train_data.image_size)
    runs = []
    for model_dir in model_dirs:
        load_source_weights(model, str(model_dir))  # every weight must be found
        runs.append([v.numpy() for v in model.weights])
    return runs, [v.path for v in model.weights]


def test_two_workers_equal_two_replicas_and_synchronized_batch_norm_equals_one(
        synthetic_shards, tmp_path):
    steps = EQUIVALENCE_STEPS
    params = overrides(synthetic_shards, **short_run(steps), **{
        "runtime.collective_timeout_seconds": 60, "runtime.startup_timeout_seconds": 120})
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    workers = [launch(train_command(tmp_path / "workers", params, worker_hosts=hosts,
                                    task_index=i), tmp_path / f"worker_{i}.log")
               for i in range(2)]
    # All four processes at once: the workers spend their first seconds
    # waiting for each other, time the one-process runs use.
    mirrored = _replica_check("equivalence", synthetic_shards, tmp_path)
    synchronized = _replica_check("synchronized", synthetic_shards, tmp_path)
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, open(tmp_path / f"worker_{index}.log").read()[-3000:]
    assert _result(*mirrored)["steps"] == steps
    synced = _result(*synchronized)

    initial = list(np.load(tmp_path / "equivalence_initial.npz").values())
    (two_workers, two_replicas, synchronized), names = _restored_weights(
        params, tmp_path / "workers", tmp_path / "equivalence", tmp_path / "synchronized_sync2")
    assert len(names) > 200
    # The steps (trainable weights and the replica mean of the moving
    # statistics) are the same in both layouts to 2e-5 (measured 1.0e-5,
    # one thread in every process), and every weight to 1e-2 of its size
    # (measured 5.2e-3, a BatchNorm beta: a weight near zero after two steps
    # is all update) ...
    assert relative_update_difference(initial, two_workers, two_replicas) < 2e-5
    for name, ours, reference in zip(names, two_workers, two_replicas):
        scale = max(float(np.max(np.abs(reference))), 1e-6)
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-2 * scale, err_msg=name)
    # ... and the comparison can fail: the same steps with BatchNorm
    # statistics over the global batch instead of each replica's half (the
    # only difference) move the weights otherwise (measured 8.9e-2).
    assert relative_update_difference(initial, synchronized, two_replicas) > 1e-2
    # Synchronized BatchNorm: two replicas of 8 take the steps of one of 16,
    # to the precision of Keras's synchronized moments (variance as
    # E[x^2] - E[x]^2, summed in another order here): measured 2.4e-3 after
    # two steps; that formula against the two-pass one on the same batch in
    # one process moves the gradient by 7e-3. Per-replica statistics (the
    # control above, a missing all-reduce) give about 9e-2.
    assert synced["sync_steps"] == [steps, steps]
    assert synced["sync_two_minus_one"] < 1e-2


def test_one_all_reduce_per_step_with_or_without_clipping(synthetic_shards, tmp_path):
    result = _result(*_replica_check("all_reduce_counts", synthetic_shards, tmp_path))
    # One all-reduce per step with clipping, and per update when accumulating
    # micro-batches (loss scaling, clipping) with an EMA. Without clipping it
    # is the batch-norm test's step; with loss scaling and clipping, the
    # in-process overflow test's.
    assert set(result["counts"]) == {"clipped", "accumulated"}
    for name, counts in result["counts"].items():
        _assert_one_all_reduce(counts, name)
    # The clipped step equals one device's: each half through the network
    # alone, the whole batch's gradient clipped to its global norm, RMSprop.
    # Measured 1.8e-4 (the fused BatchNorm kernel's gradient against Keras's
    # layer differs by 2e-4 on one device); without clipping the update
    # differs entirely (0.99).
    assert result["norm"] > 10 * result["clip"]
    assert result["two_minus_clipped_reference"] < 1e-3
    assert result["two_minus_unclipped_reference"] > 0.5


def _assert_skipped_everywhere(results):
    """`results`: `overflow_steps` of each process; every list is per local replica."""
    own = [finite for result in results for finite in result["own_gradients_finite"][1]]
    # The forced overflow: the last replica's own gradients only.
    assert own == [True] * (len(own) - 1) + [False], own
    for result in results:
        for index, (scales, changes) in enumerate(zip(result["scale"], result["largest_change"])):
            step = index + 1
            # Skipped on every replica, and the loss scale halved on every
            # replica, at the overflow step only; the run goes on after it.
            expected = START_SCALE if step < OVERFLOW_STEP else START_SCALE / 2
            assert scales == [expected] * len(scales), (step, scales)
            if step == OVERFLOW_STEP:
                assert changes == [0.0] * len(changes), (step, changes)
            else:
                assert min(changes) > 1e-5, (step, changes)
        assert all(result["finite"]) and result["step"] == 3


def test_a_float16_overflow_on_one_replica_skips_the_step_on_both(synthetic_shards, tmp_path):
    # With clipping here (the step clips the summed gradients, then decides);
    # the two-worker test below runs the unclipped step.
    result = _result(*_replica_check("overflow", synthetic_shards, tmp_path))
    _assert_skipped_everywhere([result])
    # The clipped mixed_float16 step: one all-reduce per step.
    _assert_one_all_reduce(result["collectives"], "mixed_clipped")
    # Saved and restored: a trainer resuming from the checkpoint has the halved scale.
    assert result["restored"] == {"step": 3, "scale": START_SCALE / 2}


def test_two_workers_skip_a_float16_overflow_on_one_worker_alike(synthetic_shards, tmp_path):
    import tensorflow as tf  # noqa: PLC0415

    # Without clipping (CLIP 0); the clipped step is the in-process test's above.
    hosts = ",".join(f"localhost:{port}" for port in free_ports(2))
    workers = [launch(
        [sys.executable, "-m", "tests.training.overflow_checks", str(task), hosts,
         json.dumps(list(synthetic_shards)), str(tmp_path / "run"), "0",
         str(tmp_path / f"worker_{task}.json")], tmp_path / f"worker_{task}.log")
        for task in range(2)]
    for task, worker in enumerate(workers):
        log = tmp_path / f"worker_{task}.log"
        assert worker.wait(timeout=600) == 0, log.read_text()[-3000:]
    _assert_skipped_everywhere([json.loads((tmp_path / f"worker_{task}.json").read_text())
                                for task in range(2)])
    # The chief's checkpoint holds the halved scale (what a resumed run restores).
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert reader.get_tensor("optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE") == \
        START_SCALE / 2
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 3
