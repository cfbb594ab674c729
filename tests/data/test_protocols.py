"""The input pipeline's evaluation crop is the evaluator's.

`preprocess_single_crop` against `polynet_tf.evaluation.crops.make_crops`, and
`DataConfig.eval_crop_protocol`.
"""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, protocols
from polynet_tf.evaluation.crops import make_crops


def _png(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("name, overrides", [
    ("single", dict(crop_size=24, crop_fraction=0.8)),
    ("shorter_side", dict(crop_size=24, scales=(29,))),
    ("pytorchcv", dict(crop_size=24)),
    ("squash", dict(crop_size=24, scales=(30,))),
    ("shorter_side", dict(crop_size=24, scales=(29,), antialias=False)),
])
@pytest.mark.parametrize("height, width", [(37, 50), (61, 40), (33, 33)])
def test_the_single_crop_is_the_evaluators(name, overrides, height, width):
    # The evaluator cuts its crops from the decoded image with its own graph
    # (polynet_tf.evaluation.crops); the input pipeline from the encoded bytes.
    protocol = protocols.get_protocol(name, **overrides)
    encoded = _png(height, width)
    got = protocols.preprocess_single_crop(encoded, protocol, normalize=False).numpy()
    expected = make_crops(tf.io.decode_png(encoded), protocol).numpy()
    assert got.shape == expected.shape[1:] == (24, 24, 3)
    np.testing.assert_allclose(got, expected[0], rtol=0, atol=1e-3)


def test_normalisation_and_refused_protocols():
    protocol = protocols.get_protocol("single", crop_size=16)
    encoded = _png(20, 30)
    raw = protocols.preprocess_single_crop(encoded, protocol, normalize=False).numpy()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalized = protocols.preprocess_single_crop(encoded, protocol, mean=mean, std=std)
    np.testing.assert_allclose(normalized.numpy(), (raw / 255.0 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="144 crops per image"):
        protocols.preprocess_single_crop(encoded, protocols.get_protocol("googlenet144"))
    nearest = protocols.CropProtocol("custom", crop_size=16, scales=(20,))
    with pytest.raises(ValueError, match="'custom'.*rounding='nearest'"):
        protocols.preprocess_single_crop(encoded, nearest)


@pytest.mark.parametrize("values, expected", [
    (dict(eval_protocol="single", image_size=64, crop_fraction=0.75),
     dict(name="single", crop_size=64, resize="none", crop_fraction=0.75)),
    (dict(eval_protocol="shorter_side", image_size=64, resize_size=80, eval_antialias=False),
     dict(name="shorter_side", crop_size=64, resize="shorter_side", scales=(80,),
          rounding="torchvision", antialias=False)),
    (dict(eval_protocol="squash", image_size=64, resize_size=70),
     dict(name="squash", crop_size=64, resize="squash", scales=(70,))),
])
def test_data_config_names_the_evaluators_protocol(values, expected):
    protocol = DataConfig(is_training=False, file_pattern="x-*", **values).eval_crop_protocol()
    for field, value in expected.items():
        assert getattr(protocol, field) == value, field
    assert protocol.num_crops == 1
    contract = DataConfig(is_training=False, file_pattern="x-*", **values).input_contract()
    assert contract.crop_protocol() == protocol
    assert contract.image_size == 64 and contract.antialias == protocol.antialias
