"""EMA of the weights: the hand-computed average, the swap for evaluation, checkpoints, loading."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import train
from polynet_tf.configs import ConfigError, load_experiment
from polynet_tf.loading import load_model
from tests.training.conftest import TINY_CONFIG
from tests.training.fixed_input import (fixed_iterator, images_and_labels, make_trainer,
                                        run_updates, trainable_values)

DECAY = 0.2  # below the warm-up's (1 + t) / (10 + t) from t = 2 on: both branches are used


def test_the_average_is_the_ema_of_the_raw_trajectory_and_is_checkpointed(tmp_path):
    settings = {"trainer.ema_decay": DECAY, "train_data.global_batch_size": 8}
    trainer = make_trainer(tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]), **settings)
    iterator = fixed_iterator(trainer, *images_and_labels(16), 8)
    expected = trainable_values(trainer)  # the average starts at the initial weights
    for t in range(4):
        run_updates(trainer, iterator, 1)
        d = min(DECAY, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, trainable_values(trainer))]
    averages = [a.numpy() for a in trainer._ema.averages]
    for average, value in zip(averages, expected):
        np.testing.assert_allclose(average, value, rtol=1e-5, atol=1e-6)
    raw = {v.path: v.numpy() for v in trainer.model.weights}
    assert any(not np.array_equal(a, raw[v.path])
               for a, v in zip(averages, trainer.model.trainable_variables))
    # Evaluation's swap: the averages inside, the raw weights bit-identical after.
    with trainer._ema.swapped():
        for average, variable in zip(averages, trainer.model.trainable_variables):
            np.testing.assert_array_equal(variable.numpy(), average)
    for variable in trainer.model.weights:
        np.testing.assert_array_equal(variable.numpy(), raw[variable.path])
    saved = trainer.save()

    resumed = make_trainer(tmp_path, **settings)
    assert train._start_message(resumed) == f"Resumed from {saved} at step 4"
    for average, restored in zip(averages, resumed._ema.averages):
        np.testing.assert_array_equal(restored.numpy(), average)

    # Evaluation and export load the averages by default, the raw weights on request;
    # weights without an average (BatchNorm's moving statistics) are the raw ones.
    by_path = {v.path: a for v, a in zip(trainer.model.trainable_variables, averages)}
    for kind in ("auto", "raw"):
        loaded = load_model(checkpoint=str(tmp_path), config=trainer.config,
                            classifier_activation=None, weights_kind=kind)
        assert loaded.description["weights_kind"] == ("raw" if kind == "raw" else "ema")
        for variable in loaded.model.weights:
            want = raw[variable.path] if kind == "raw" else by_path.get(variable.path,
                                                                         raw[variable.path])
            np.testing.assert_array_equal(variable.numpy(), want, err_msg=variable.path)


def test_a_run_without_ema_has_no_averages_until_turned_on(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer._ema is None
    assert trainer.restored_from is None and not trainer.resumed
    trainer.save()
    with pytest.raises(ValueError, match="holds no EMA of its weights"):
        load_model(checkpoint=str(tmp_path), config=trainer.config, weights_kind="ema")
    with pytest.raises(ValueError, match="keeps no EMA"):
        trainer.evaluate(weights_kind="ema")
    # EMA turned on when resuming it: the averages start at the resumed weights.
    resumed = make_trainer(tmp_path, **{"trainer.ema_decay": 0.5})
    assert resumed.resumed
    for average, variable in zip(resumed._ema.averages, trainer.model.trainable_variables):
        np.testing.assert_array_equal(average.numpy(), variable.numpy())


@pytest.mark.parametrize("override, message", [
    ("trainer.ema_decay=1.0", r"'trainer.ema_decay' must be in \[0.0, 1.0\), got 1.0"),
    ("trainer.ema_decay=-0.1", r"'trainer.ema_decay' must be in \[0.0, 1.0\)"),
    ("trainer.accumulation_steps=0", "'trainer.accumulation_steps' must be an integer >= 1"),
])
def test_bad_ema_and_accumulation_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/t-*," + override)
