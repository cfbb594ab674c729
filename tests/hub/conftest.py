"""Tiny PolyNets for the keras-hub tests (the hub extra is part of the test extra)."""

import numpy as np
import pytest

from tests.conftest import TINY_WIDTH

# One module of each kind the released network uses, in every stage (poly-3 with
# shared convs and separate BatchNorms, 2-way): the very_deep structure, short.
TINY_SPEC = "A: 2way | B: poly3[convs], 2way | C: poly3[convs]"
TINY_SIZE = 75


def randomize(model, seed=0):
    """Random values in every variable (positive BatchNorm variances), so that a
    copy that misses or swaps any weight changes the outputs."""
    rng = np.random.RandomState(seed)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            values.append(rng.normal(0.0, 0.2, shape).astype("float32"))
    model.set_weights(values)


@pytest.fixture
def tiny_backbone():
    from polynet_tf.hub import PolyNetBackbone

    return PolyNetBackbone(TINY_SPEC, width_multiplier=TINY_WIDTH)


def tiny_classifier(num_classes=3, image_size=TINY_SIZE, **kwargs):
    """A tiny PolyNetImageClassifier with its preprocessor, weights randomized."""
    from polynet_tf.data import InputContract
    from polynet_tf.hub import (
        PolyNetBackbone,
        PolyNetImageClassifier,
        PolyNetImageClassifierPreprocessor,
        PolyNetImageConverter,
    )

    backbone = PolyNetBackbone(TINY_SPEC, width_multiplier=TINY_WIDTH)
    preprocessor = PolyNetImageClassifierPreprocessor(
        PolyNetImageConverter.from_contract(InputContract("squash", image_size)))
    classifier = PolyNetImageClassifier(backbone, num_classes=num_classes,
                                        preprocessor=preprocessor, **kwargs)
    randomize(classifier)
    return classifier


def raw_images(count=2, height=90, width=80, seed=3):
    """uint8 RGB images of another size than the network's input."""
    return np.random.RandomState(seed).randint(0, 256, (count, height, width, 3)).astype("uint8")
