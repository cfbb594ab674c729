"""Gradient accumulation: k micro-batches make the update of one k-times batch."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import train

from tests.training.equivalence import relative_update_difference
from tests.training.fixed_input import (fixed_iterator, images_and_labels, make_trainer,
                                        run_updates, trainable_values)

# BatchNorm frozen (inference mode): its batch statistics are those of the
# micro-batch, the one thing accumulation cannot make equal (docs/training.md).
FROZEN_BATCH_NORM = {"init.batch_norm_inference": True}

SCENARIOS = {
    # SGD with momentum is not invariant to the gradient's scale: the mean
    # (not the sum) of the micro-batch gradients must be applied.
    "momentum": {"optimizer.name": "momentum"},
    # A clipping threshold below the gradient's norm: the accumulated gradient
    # (not each micro-batch's) is clipped; loss scaling covers the sum.
    "clipped_mixed_float16": {"optimizer.clip_global_norm": 0.05,
                              "trainer.mixed_precision": "mixed_float16"},
}


def _settings(scenario, k):
    """The config of `scenario` with k micro-batches of 16 / k images per update."""
    return {**FROZEN_BATCH_NORM, **SCENARIOS[scenario],
            "train_data.global_batch_size": 16 // k, "trainer.accumulation_steps": k}


@pytest.fixture(scope="module")
def two_updates(tmp_path_factory):
    """(scenario, k) -> (trainer after two updates on 32 fixed images, its initial
    trainable values, the loop's totals); each trainer made at its first use."""
    directory, runs = tmp_path_factory.mktemp("accumulation"), {}

    def run(scenario, k):
        if (scenario, k) not in runs:
            trainer = make_trainer(directory / f"{scenario}_{k}", **_settings(scenario, k))
            initial = trainable_values(trainer)
            images, labels = images_and_labels(32)
            # Two updates: the second uses the optimizer state the first left.
            totals = run_updates(trainer, fixed_iterator(trainer, images, labels, 16 // k), 2)
            runs[scenario, k] = trainer, initial, totals
        return runs[scenario, k]

    return run


@pytest.mark.parametrize("scenario, tolerance", [
    ("momentum", 1e-4),  # 3 with the sum instead of the mean
    ("clipped_mixed_float16", 2e-2),
])
def test_k_micro_batches_update_as_one_k_times_batch(two_updates, scenario, tolerance):
    values = {}
    for k in (1, 4):
        trainer, initial, totals = two_updates(scenario, k)
        assert trainer.step == 2
        assert float(totals[3]) == 32  # every image of both updates was seen once
        values[k] = trainable_values(trainer)
        assert trainer.update_batch_size == 16
        assert float(trainer.schedule(0)) == pytest.approx(0.4 * 16 / 512 / 20)
    assert relative_update_difference(initial, values[4], values[1]) < tolerance


def test_a_checkpoint_is_at_an_update_boundary_without_accumulators(two_updates):
    # The data stream's resumption (updates x micro-batches skipped) is
    # test_trainer.py's resumed-run test, which accumulates.
    trainer, _, _ = two_updates("momentum", 4)
    # One call, one update: the accumulators are back at zero after each, so
    # a checkpoint (written between calls) needs none of them.
    assert trainer.step == 2
    assert all(np.all(a.numpy() == 0) for a in trainer._accumulators)
    saved = trainer.save()
    assert not any("accumulated" in name for name, _ in tf.train.list_variables(saved))
    resumed = make_trainer(trainer.model_dir, **_settings("momentum", 4))
    assert train._start_message(resumed) == f"Resumed from {saved} at step 2"
    for a, b in zip(trainer.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
