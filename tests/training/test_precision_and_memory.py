"""The Trainer with mixed precision, and with a rematerialized network."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.configs import load_experiment
from polynet_tf.models import polyinception_modules
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import TINY_CONFIG, overrides


@pytest.fixture
def float32_afterwards():
    """The Trainer sets the process-wide dtype policy; leave float32 behind."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def _trainer(shards, model_dir, **values):
    config = load_experiment([TINY_CONFIG], overrides(shards, **values))
    return Trainer(config, str(model_dir), tf.distribute.OneDeviceStrategy("/cpu:0"))


@pytest.mark.slow
def test_mixed_bfloat16_trains_with_float32_variables(synthetic_shards, tmp_path,
                                                      float32_afterwards):
    trainer = _trainer(synthetic_shards, tmp_path, **{
        "trainer.mixed_precision": "mixed_bfloat16", "trainer.train_steps": 100,
        "trainer.steps_per_loop": 20, "trainer.checkpoint_interval": 100})
    # Computed in bfloat16 (else this test would prove nothing) ...
    assert trainer.model.get_layer("stage_a_0").compute_dtype == "bfloat16"
    images = tf.zeros((1, 75, 75, 3))
    assert trainer.model.get_layer("stage_b_0")(
        trainer.model.get_layer("reduction_a")(trainer.model.get_layer("stage_a_0")(
            trainer.model.get_layer("stem")(images)))).dtype == tf.bfloat16
    loops = []
    for steps in range(20, 101, 20):
        trainer.config.trainer.train_steps = steps
        loops.append(trainer.train())
    losses = [loop["loss"] for loop in loops]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.75 * losses[0], losses
    assert loops[-1]["top1"] > loops[0]["top1"] + 0.1, loops
    # ... stored in float32: weights, BatchNorm statistics, optimizer slots.
    assert {v.dtype for v in trainer.model.weights} == {"float32"}
    assert {v.dtype for v in trainer.optimizer.variables if "float" in str(v.dtype)} == {
        "float32"}
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "ckpt-100"))
    saved = {reader.get_tensor(name).dtype for name in reader.get_variable_to_shape_map()
             if name.startswith("model/") and "VARIABLE_VALUE" in name}
    assert saved == {np.dtype("float32")}


def test_a_float32_trainer_after_a_mixed_one_computes_in_float32(synthetic_shards, tmp_path,
                                                                 float32_afterwards):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    trainer = _trainer(synthetic_shards, tmp_path, **{"trainer.train_steps": 1})
    assert trainer.model.get_layer("stage_a_0").compute_dtype == "float32"


@pytest.mark.slow
def test_rematerialized_training_equals_plain_training(synthetic_shards, tmp_path):
    """Two Trainer steps with stochastic paths on: same weights and statistics."""
    settings = {"trainer.train_steps": 2, "trainer.steps_per_loop": 2,
                "trainer.checkpoint_interval": 2, "model.drop_path_rate": 0.25}
    plain = _trainer(synthetic_shards, tmp_path / "plain", **settings)
    plain.train()
    remat = _trainer(synthetic_shards, tmp_path / "remat",
                     **dict(settings, **{"model.rematerialize": True}))
    assert all(m.rematerialize for m in polyinception_modules(remat.model))
    assert all(remat.model.get_layer(name).rematerialize
               for name in ("stem", "reduction_a", "reduction_b"))
    assert remat.config.to_dict()["model"]["rematerialize"] is True
    remat.train()
    assert remat.step == plain.step == 2
    for a, b in zip(plain.model.weights, remat.model.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
