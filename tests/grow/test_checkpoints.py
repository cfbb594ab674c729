"""Source formats: .weights.h5, .keras and the training engine's TF checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import PolyNet
from polynet_tf.grow import GrowthError, initialize_from_checkpoint, load_source_weights
from tests.conftest import TINY_WIDTH
from tests.grow.conftest import images, predict, randomize_batch_norms, tiny, values

SMALL = "A: ir | B: ir*2 | C: ir"
LARGER = "A: ir*2 | B: 2way, mpoly2 | C: 3way"
OPTIONS = dict(width_multiplier=TINY_WIDTH, classes=10, input_shape=(75, 75, 3))


def _engine_checkpoint(model, directory, saves=2):
    """What the training engine writes: model, optimizer and step, managed."""
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step), directory, 3)
    for i in range(saves):
        randomize_batch_norms(model, seed=10 + i)  # later saves differ
        step.assign(i + 1)
        prefix = manager.save()
    return prefix


def _assert_same_values(model, reference):
    restored = values(model)
    for path, value in values(reference).items():
        assert np.array_equal(restored[path], value), path


def test_weights_h5_and_keras_files(tmp_path):
    # (The command-line test grows from a .weights.h5 file end to end.)
    small = randomize_batch_norms(tiny(SMALL), seed=3)
    small.save_weights(tmp_path / "small.weights.h5")
    small.save(tmp_path / "small.keras")
    for name in ("small.weights.h5", "small.keras"):
        restored = tiny(SMALL)
        assert load_source_weights(restored, tmp_path / name) == str(tmp_path / name)
        _assert_same_values(restored, small)


def test_a_file_of_a_larger_architecture_is_an_error(tmp_path):
    # Keras alone would load the first two blocks of each 3-way and say nothing.
    larger = tiny("A: ir | B: 3way*2 | C: ir")
    larger.save_weights(tmp_path / "larger.weights.h5")
    larger.save(tmp_path / "larger.keras")
    for name in ("larger.weights.h5", "larger.keras"):
        with pytest.raises(GrowthError, match="another architecture") as error:
            load_source_weights(tiny("A: ir | B: 2way*2 | C: ir"), tmp_path / name)
        assert error.value.name == str(tmp_path / name) and error.value.in_source


def test_engine_checkpoint_directory_and_prefix(tmp_path):
    small = tiny(SMALL)
    prefix = _engine_checkpoint(small, tmp_path / "run")
    x = images(seed=5)
    expected = predict(small, x)  # the latest save
    # What `train --init_from` does: grow its freshly built model in place.
    grown = PolyNet(LARGER, **OPTIONS)
    report = initialize_from_checkpoint(
        grown, tmp_path / "run", SMALL, mode="function_preserving",
        report_path=tmp_path / "init", width_multiplier=TINY_WIDTH, classes=10)
    assert report.source["checkpoint"] == prefix
    assert (tmp_path / "init.mapping.txt").exists() and (tmp_path / "init.mapping.json").exists()
    assert np.abs(predict(grown, x) - expected).max() <= 1e-5
    restored = tiny(SMALL)
    assert load_source_weights(restored, prefix) == prefix
    _assert_same_values(restored, small)


def test_engine_checkpoint_of_another_architecture_is_an_error(tmp_path):
    _engine_checkpoint(tiny("A: ir | B: 2way*2 | C: ir"), tmp_path / "run", saves=1)
    with pytest.raises(GrowthError, match="another architecture|does not match") as error:
        load_source_weights(tiny(SMALL), tmp_path / "run")
    assert error.value.in_source


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(GrowthError, match="no such file"):
        load_source_weights(tiny(SMALL), tmp_path / "absent.weights.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrowthError, match="no TensorFlow checkpoint"):
        load_source_weights(tiny(SMALL), tmp_path / "empty")
    with pytest.raises(GrowthError, match="not a .weights.h5"):
        load_source_weights(tiny(SMALL), tmp_path / "weights.bin")
