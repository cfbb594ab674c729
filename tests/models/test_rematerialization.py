"""PolyNet(rematerialize=True): modules, stem and reductions; a training step is unchanged."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import PolyNet
from polynet_tf.configs import ModelConfig
from polynet_tf.models import polyinception_modules
from polynet_tf.models.factory import build_model
from tests.conftest import ROOT, TINY_WIDTH, jax_subprocess_env

SPEC = "A: 2way | B: poly3[convs], 2way | C: mpoly2"


def _tiny(rematerialize):
    keras.utils.set_random_seed(5)  # same initial weights for both networks
    return PolyNet(SPEC, width_multiplier=TINY_WIDTH, classes=5, input_shape=(75, 75, 3),
                   classifier_activation=None, drop_path_rate=0.5, seed=11,
                   rematerialize=rematerialize)


def _rematerialized_layers(model):
    """The PolyInception modules, stem and reductions of a PolyNet, bottom to top."""
    return polyinception_modules(model) + [
        model.get_layer(name) for name in ("stem", "reduction_a", "reduction_b")]


def _step(model, x, labels):
    """One training step's loss and gradients, run eagerly.

    Traced, the two networks' steps cost 15 s of CPU; the layers' traced steps
    are tests/layers/test_rematerialization.py's, and the traced Trainer step
    with a rematerialized network is tests/training/test_precision_and_memory.py's.
    """
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    gradients = tape.gradient(loss, model.trainable_variables)
    return float(loss), [g.numpy() for g in gradients]


def test_training_step_gradients_and_statistics_equal_the_plain_network():
    x = np.random.default_rng(0).normal(size=(4, 75, 75, 3)).astype("float32")
    labels = tf.constant([0, 1, 2, 3])
    plain, remat = _tiny(False), _tiny(True)
    assert all(layer.rematerialize for layer in _rematerialized_layers(remat))
    assert not any(layer.rematerialize for layer in _rematerialized_layers(plain))
    loss_plain, g_plain = _step(plain, x, labels)
    loss_remat, g_remat = _step(remat, x, labels)
    assert np.isclose(loss_remat, loss_plain, rtol=1e-6)
    for variable, a, b in zip(plain.trainable_variables, g_plain, g_remat):
        scale = np.abs(a).max() + 1e-12
        np.testing.assert_allclose(b / scale, a / scale, atol=1e-5, err_msg=variable.path)
    moved = 0
    for a, b in zip(plain.non_trainable_variables, remat.non_trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
        moved += not np.allclose(a.numpy(), 0.0) and not np.allclose(a.numpy(), 1.0)
    assert moved > 0  # the statistics did move


def test_the_option_is_saved_and_comes_from_the_model_config(tmp_path):
    model = build_model(ModelConfig(architecture=SPEC, num_classes=3,
                                    width_multiplier=TINY_WIDTH, rematerialize=True),
                        image_size=75)
    assert all(layer.rematerialize for layer in _rematerialized_layers(model))
    path = tmp_path / "remat.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert all(layer.rematerialize for layer in _rematerialized_layers(restored))
    plain = build_model(ModelConfig(architecture=SPEC, num_classes=3,
                                    width_multiplier=TINY_WIDTH), image_size=75)
    assert not any(layer.rematerialize for layer in _rematerialized_layers(plain))


_JAX_SCRIPT = """
import keras, numpy as np
from polynet_tf import PolyNet
assert keras.backend.backend() == "jax"
model = PolyNet("A: 2way | B: ir | C: ir", width_multiplier=0.0625, classes=3,
                input_shape=(75, 75, 3), rematerialize=True)
x = np.zeros((2, 75, 75, 3), "float32")
model.predict(x, verbose=0)  # inference is unaffected
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
try:
    model.train_on_batch(x, np.zeros(2))
except NotImplementedError as error:
    print("refused:", error)
"""


@pytest.mark.slow
def test_training_on_another_backend_is_refused_clearly():
    pytest.importorskip("jax")
    result = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], capture_output=True,
                            text=True, env=jax_subprocess_env(), timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("refused:"), result.stdout
    assert "Training with `rematerialize=True` needs the TensorFlow backend; the backend " \
           "is 'jax'" in result.stdout
