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


@pytest.mark.parametrize("settings, tolerance", [
    # SGD with momentum is not invariant to the gradient's scale: the mean
    # (not the sum) of the micro-batch gradients must be applied.
    ({"optimizer.name": "momentum"}, 1e-4),  # 3 with the sum instead of the mean
    # A clipping threshold below the gradient's norm: the accumulated gradient
    # (not each micro-batch's) is clipped; loss scaling covers the sum.
    ({"optimizer.clip_global_norm": 0.05, "trainer.mixed_precision": "mixed_float16"}, 2e-2),
], ids=["momentum", "clipped_mixed_float16"])
def test_k_micro_batches_update_as_one_k_times_batch(tmp_path, settings, tolerance):
    images, labels = images_and_labels(32)
    runs = {}
    for k in (1, 4):
        trainer = make_trainer(tmp_path / str(k), **FROZEN_BATCH_NORM, **settings, **{
            "train_data.global_batch_size": 16 // k, "trainer.accumulation_steps": k})
        initial = trainable_values(trainer)
        # Two updates: the second uses the optimizer state the first left.
        totals = run_updates(trainer, fixed_iterator(trainer, images, labels, 16 // k), 2)
        assert trainer.step == 2
        assert float(totals[3]) == 32  # every image of both updates was seen once
        runs[k] = trainable_values(trainer)
        assert trainer.update_batch_size == 16
        assert float(trainer.schedule(0)) == pytest.approx(0.4 * 16 / 512 / 20)
    assert relative_update_difference(initial, runs[4], runs[1]) < tolerance


def test_a_checkpoint_is_at_an_update_boundary_without_accumulators(tmp_path):
    # The data stream's resumption (updates x micro-batches skipped) is
    # test_trainer.py's resumed-run test, which accumulates.
    settings = {"trainer.accumulation_steps": 3, "train_data.global_batch_size": 2}
    trainer = make_trainer(tmp_path, **settings)
    run_updates(trainer, fixed_iterator(trainer, *images_and_labels(6), 2), 1)
    # One call, one update: the accumulators are back at zero, so a checkpoint
    # (written between calls) needs none of them.
    assert trainer.step == 1
    assert all(np.all(a.numpy() == 0) for a in trainer._accumulators)
    saved = trainer.save()
    assert not any("accumulated" in name for name, _ in tf.train.list_variables(saved))
    resumed = make_trainer(tmp_path, **settings)
    assert train._start_message(resumed) == f"Resumed from {saved} at step 1"
    for a, b in zip(trainer.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
