"""`InputContract` and `resolve_input_contract`: fields, precedence, plain data, errors."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, InputContract, preprocessing, resolve_input_contract


def _png(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_resizing_protocols_resolve_their_resize_size_from_the_ratio():
    assert InputContract("squash", 331).resize_size == 378
    assert InputContract("shorter_side", 331).resize_size == 378
    assert InputContract("pytorchcv", 331).resize_size == 379
    assert InputContract("squash", 75).resize_size == 86  # 75 * 378 / 331 = 85.6
    assert InputContract("single", 75).crop_fraction == 0.875
    contract = InputContract("shorter_side", 64, resize_size=80)
    assert (contract.resize, contract.rounding, contract.value_range) == (
        "shorter_side", "torchvision", (0.0, 255.0))
    assert InputContract("squash", 64).resize == "squash"


def test_the_published_figure_of_each_protocol_at_331():
    assert InputContract("squash", 331).published_figure[:2] == (81.002, 95.624)
    assert InputContract("shorter_side", 331).published_figure[:2] == (80.858, 95.560)
    assert InputContract("pytorchcv", 331).published_figure[:2] == (80.90, 95.48)
    assert InputContract("squash", 331, resize_size=400).published_figure is None
    assert InputContract("squash", 75).published_figure is None


def test_preprocess_is_the_data_package_crop_to_the_bit():
    encoded = _png(61, 90)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    contract = InputContract("squash", 32, resize_size=40, mean=mean, std=std)
    np.testing.assert_array_equal(
        contract.preprocess(encoded).numpy(),
        preprocessing.squash_center_crop(encoded, 40, 32, mean=mean, std=std).numpy())
    contract = InputContract("single", 32, crop_fraction=0.8)
    np.testing.assert_array_equal(
        contract.preprocess(encoded).numpy(),
        preprocessing.preprocess_for_eval(encoded, 32, 0.8).numpy())


def test_plain_data_round_trip():
    contract = InputContract("pytorchcv", 64, antialias=False, mean=(0.5,) * 3, std=(0.2,) * 3)
    values = contract.to_dict()
    assert values["resize_size"] == 73 and values["mean"] == [0.5] * 3
    assert InputContract.from_dict(values) == contract
    with pytest.raises(ValueError, match=r"entries \['resize'\] disagree"):
        InputContract.from_dict(dict(values, resize="squash"))
    with pytest.raises(ValueError, match=r"Unknown InputContract field\(s\) \['size'\]"):
        InputContract.from_dict({"size": 3})


def test_precedence_explicit_then_data_then_metadata_then_pretrained():
    pretrained = InputContract("squash", 331)
    metadata = InputContract("single", 96, crop_fraction=0.9).to_dict()
    data = DataConfig(is_training=False, file_pattern="x", image_size=64,
                      eval_protocol="shorter_side", resize_size=80)
    assert resolve_input_contract(pretrained=pretrained) == pretrained
    assert resolve_input_contract(metadata=metadata, pretrained=pretrained) == \
        InputContract.from_dict(metadata)
    assert resolve_input_contract(data_config=data, metadata=metadata,
                                  pretrained=pretrained) == data.input_contract()
    explicit = resolve_input_contract(data_config=data, protocol="squash")
    # A new protocol drops the base's resize size (the protocol's ratio instead).
    assert (explicit.protocol, explicit.image_size, explicit.resize_size) == ("squash", 64, 73)
    # A new size keeps the base's resize-to-crop ratio: 80 / 64 at 48 -> 60.
    assert resolve_input_contract(data_config=data, image_size=48).resize_size == 60
    assert resolve_input_contract(default=InputContract("single", 75)) == InputContract(
        "single", 75)
    assert resolve_input_contract() == InputContract()
    with pytest.raises(ValueError, match=r"Unknown InputContract option\(s\) \['crop_size'\]"):
        resolve_input_contract(crop_size=3)


def test_earlier_names_are_aliases_of_the_same_crop():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        contract = InputContract("released", 331)
        squash = resolve_input_contract(protocol="released_squash", image_size=331)
    assert contract == InputContract("shorter_side", 331)
    assert squash == InputContract("squash", 331)
    assert all(w.category is DeprecationWarning for w in caught) and len(caught) == 2
    assert "'released' is deprecated: it is 'shorter_side'" in str(caught[0].message)


@pytest.mark.parametrize("values, message", [
    (dict(protocol="googlenet144"), "one crop per image"),
    (dict(protocol="single", resize_size=80), "resize_size applies to the resizing"),
    (dict(protocol="squash", crop_fraction=0.8), "crop_fraction applies to 'single' only"),
    (dict(protocol="squash", image_size=400, resize_size=378), "crop_size 400 is larger"),
    (dict(interpolation="nearest"), "interpolation must be one of"),
    (dict(mean=(0.5, 0.5)), "mean must be 3 numbers"),
    (dict(std=(0.5, 0.5, 0.0)), "std entries must be positive"),
])
def test_invalid_contracts_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        InputContract(**values)
