"""`load_model`: weights file, checkpoint + config and run directory give the same model."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import runs
from polynet_tf.configs import base
from polynet_tf.configs.experiment import ExperimentConfig, ModelConfig
from polynet_tf.data.config import DataConfig
from polynet_tf.loading import load_model
from polynet_tf.models.factory import build_model

SPEC = "A: ir*1 | B: ir*1 | C: ir*1"
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 'training run': params.yaml, a checkpoint, and the same weights as a file."""
    root = tmp_path_factory.mktemp("run")
    config = ExperimentConfig(
        model=ModelConfig(architecture=SPEC, num_classes=4, width_multiplier=0.1, seed=1),
        eval_data=DataConfig(is_training=False, image_size=75, eval_protocol="shorter_side",
                             resize_size=86, mean=MEAN, std=STD))
    model = build_model(config.model, image_size=None)
    model(np.zeros((1, 75, 75, 3), np.float32))
    run_dir = str(root / "run")
    tf.io.gfile.makedirs(runs.checkpoints_dir(run_dir))
    base.write_yaml(config.to_dict(), runs.params_path(run_dir))
    prefix = tf.train.Checkpoint(model=model).save(
        f"{runs.checkpoints_dir(run_dir)}/ckpt")
    weights = str(root / "tiny.weights.h5")
    model.save_weights(weights)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 75, 75, 3)).astype(np.float32)
    expected = tf.nn.softmax(model(images, training=False)).numpy()
    return {"run_dir": run_dir, "prefix": prefix, "weights": weights, "images": images,
            "expected": expected, "params": runs.params_path(run_dir)}


def _check(loaded, trained, config_source=True):
    out = loaded.model(trained["images"], training=False).numpy()
    np.testing.assert_allclose(out, trained["expected"], rtol=1e-5, atol=1e-6)
    assert loaded.num_classes == 4
    if config_source:
        assert loaded.protocol.name == "shorter_side"
        assert loaded.protocol.crop_size == 75 and loaded.protocol.scales == (86,)
        assert loaded.mean == tuple(MEAN) and loaded.std == tuple(STD)


def test_run_directory(trained):
    loaded = load_model(run_dir=trained["run_dir"])
    _check(loaded, trained)
    assert trained["prefix"] in loaded.description["source"]


def test_checkpoint_with_config(trained):
    _check(load_model(checkpoint=trained["prefix"], config=trained["params"]), trained)


def test_weights_file_with_config(trained):
    _check(load_model(weights=trained["weights"], config=trained["params"]), trained)


def test_weights_file_with_architecture(trained):
    loaded = load_model(weights=trained["weights"], architecture=SPEC, classes=4,
                        width_multiplier=0.1, crop_size=75, fixed_input=True)
    _check(loaded, trained, config_source=False)
    assert loaded.protocol.name == "single" and loaded.protocol.crop_size == 75
    assert loaded.model.input_shape == (None, 75, 75, 3)


def test_exactly_one_source(trained):
    with pytest.raises(ValueError, match="exactly one model source"):
        load_model(weights=trained["weights"], run_dir=trained["run_dir"])


def test_checkpoint_that_does_not_fit_names_it(trained, tmp_path):
    other = ExperimentConfig(model=ModelConfig(architecture=SPEC, num_classes=7,
                                               width_multiplier=0.1))
    path = str(tmp_path / "other.yaml")
    base.write_yaml(other.to_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_model(checkpoint=trained["prefix"], config=path)


def test_imagenet_weights_with_other_classes_are_refused_before_any_download(monkeypatch):
    # A download would fail here (no network in tests) with another error; the
    # contradiction is found first, as keras.applications does.
    monkeypatch.setenv("KERAS_HOME", "/nonexistent/keras_home")
    with pytest.raises(ValueError, match="classes` should be 1000. Received classes=10"):
        load_model(weights="imagenet", classes=10)
