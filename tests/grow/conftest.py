"""Tiny networks and a trained-looking source for the growth tests."""

import keras
import numpy as np
import pytest

from tests.conftest import TINY_CLASSES, TINY_INPUT_SHAPE, tiny_polynet

INPUT_SHAPE = TINY_INPUT_SHAPE
CLASSES = TINY_CLASSES


def tiny(architecture, **options):
    """A tiny PolyNet (width 1/16, 75x75 input, 10 classes, no dropout)."""
    options.setdefault("dropout_rate", 0.0)
    return tiny_polynet(architecture, **options)


def randomize_batch_norms(model, seed=0):
    """BatchNorm gammas, betas and moving statistics away from their initial values.

    A source still at its initial values would let a wrong mapping pass
    (every fresh BatchNorm is the identity at inference).
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        if name == "gamma":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif name in ("beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.2, weight.shape))
        elif name == "moving_variance":
            weight.assign(rng.uniform(0.5, 2.0, weight.shape))
        elif name == "path_gates":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
    return model


def values(model):
    """{weight path: NumPy value} of a model."""
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def images(batch=2, seed=0):
    """Non-negative images in [0, 1] like preprocessed inputs."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *INPUT_SHAPE)).astype("float32")


def predict(model, x, training=False):
    """Model outputs as NumPy; in training mode, BatchNorm moving statistics are
    restored afterwards (a Keras 3 call with training=True updates them)."""
    saved = [(w, keras.ops.convert_to_numpy(w)) for w in model.non_trainable_weights]
    outputs = keras.ops.convert_to_numpy(model(x, training=training))
    if training:
        for weight, value in saved:
            weight.assign(value)
    return outputs


@pytest.fixture(scope="session")
def ir_3_6_3_source():
    """IR 3-6-3 with randomized BatchNorms, built once for the whole session."""
    keras.utils.set_random_seed(7)
    return randomize_batch_norms(tiny("ir_3_6_3"), seed=7)
