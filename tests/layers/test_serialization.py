"""Every registered layer: config round trip through Keras serialization."""

import json

import keras
import numpy as np
import pytest

from polynet_tf.layers import (
    BranchConcat,
    ConvBN,
    InceptionResidualBlock,
    PolyInceptionModule,
    ReductionA,
    ReductionB,
    Stem,
)
from polynet_tf.layers.branches import conv, maxpool

BN = {"epsilon": 1e-3, "momentum": 0.9, "synchronized": False}

CASES = [
    (lambda: ConvBN(8, (1, 7), activation=False, num_norms=2, batch_norm=BN), (None, 9, 9, 4)),
    (lambda: ConvBN(6, 3, strides=2, padding="valid"), (None, 9, 9, 4)),
    (lambda: BranchConcat([[conv(4, 1), conv(6, 3, strides=2, padding="valid")], [maxpool()]],
                          num_norms=2), (None, 9, 9, 5)),
    (lambda: Stem(width_multiplier=0.0625, batch_norm=BN), (None, 75, 80, 3)),
    (lambda: ReductionA(width_multiplier=0.0625), (None, 9, 9, 24)),
    (lambda: ReductionB(width_multiplier=0.0625), (None, 9, 9, 72)),
    (lambda: InceptionResidualBlock("C", num_applications=3, width_multiplier=0.0625),
     (None, 3, 3, 128)),
    (lambda: PolyInceptionModule("A", "poly3[convs]+2way", residual_scale=0.7,
                                 drop_path_rate=0.1, width_multiplier=0.0625, seed=3,
                                 path_gates=True),
     (None, 9, 9, 24)),
    (lambda: PolyInceptionModule("B", "mpoly2", kernel_initializer="he_normal",
                                 width_multiplier=0.0625), (None, 5, 5, 72)),
]


def _call(layer, x, index):
    # ConvBN / BranchConcat select one of their BatchNorms; use the last one.
    if isinstance(layer, (ConvBN, BranchConcat)) and layer.num_norms > 1:
        return layer(x, norm_index=layer.num_norms - 1, training=False)
    return layer(x, training=False)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_config_round_trip_gives_the_same_layer(index):
    make, shape = CASES[index]
    layer = make()
    layer.build(shape)
    serialized = keras.saving.serialize_keras_object(layer)
    json.dumps(serialized)  # the config is plain JSON
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(layer)
    if not clone.built:  # deserialization builds from the saved build config
        clone.build(shape)
    assert clone.get_config() == layer.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(index).normal(size=(2, *shape[1:])).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(_call(clone, x, index)),
        keras.ops.convert_to_numpy(_call(layer, x, index)),
    )


def test_compute_output_shape_matches_the_call():
    for make, shape in CASES:
        layer = make()
        x = keras.Input(shape[1:])
        assert tuple(_call(layer, x, 0).shape) == tuple(layer.compute_output_shape(shape))


def test_bad_conv_arguments_are_rejected():
    with pytest.raises(ValueError, match="padding"):
        ConvBN(4, 3, padding="causal")
    with pytest.raises(ValueError, match="num_norms"):
        ConvBN(4, 3, num_norms=0)
    with pytest.raises(ValueError, match="Unknown branch op"):
        BranchConcat([[{"op": "avgpool"}]])
    with pytest.raises(ValueError, match="bn_epsilon"):
        ConvBN(4, 3, batch_norm={"epsilon": 0.0})
    with pytest.raises(ValueError, match="Unknown batch norm settings"):
        ConvBN(4, 3, batch_norm={"eps": 1e-3})
