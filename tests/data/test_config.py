"""Tests of `polynet_tf.data.config.DataConfig`."""

import pytest
import yaml

from polynet_tf.data import DataConfig


def test_defaults_are_the_paper_recipe():
    config = DataConfig(file_pattern="/data/train-*").validate()
    assert config.area_range == [0.08, 1.0]
    assert config.aspect_ratio_range == pytest.approx([0.75, 4 / 3])
    assert (config.max_attempts, config.random_flip, config.on_error) == (10, True, "fail")
    assert config.should_drop_remainder
    assert not DataConfig(file_pattern="x", is_training=False).should_drop_remainder


def test_yaml_round_trip():
    config = DataConfig(tfds_name="imagenet2012", tfds_split="validation",
                        is_training=False, image_size=331,
                        eval_protocol="squash_center_crop", seed=5)
    text = yaml.safe_dump({"data": config.to_dict()})
    assert DataConfig.from_dict(yaml.safe_load(text)["data"]) == config


@pytest.mark.parametrize("overrides, message", [
    ({}, "exactly one data source"),
    ({"tfds_name": "cifar10"}, "exactly one data source"),
    ({"image_size": 0}, r"DataConfig.image_size must be >= 1; received image_size=0"),
    ({"global_batch_size": 2.5}, "global_batch_size must be an integer"),
    ({"on_error": "ignore"}, r"on_error must be one of \['fail', 'skip'\]"),
    ({"eval_protocol": "ten_crop"}, "eval_protocol must be one of"),
    ({"area_range": [0.5, 0.1]}, "area_range must be two numbers"),
    ({"area_range": [0.1, 1.5]}, "area_range must be two numbers"),
    ({"aspect_ratio_range": [1.0]}, "aspect_ratio_range must be two numbers"),
    ({"deterministic": True}, "deterministic=True needs a seed"),
    ({"crop_fraction": 0}, r"crop_fraction must be in \(0, 1\]"),
    ({"eval_protocol": "squash_center_crop", "image_size": 400, "resize_size": 378},
     "resize_size must be >= image_size"),
    ({"eval_protocol": "shorter_side_center_crop", "image_size": 400, "resize_size": 378},
     "resize_size must be >= image_size for eval_protocol='shorter_side'"),
    ({"mean": [0.5, 0.5]}, "mean must be 3 numbers"),
    ({"cache": "yes"}, "cache must be True or False"),
    ({"compression_type": "BZ2"}, "compression_type must be one of"),
])
def test_invalid_values_name_the_field(overrides, message):
    values = {"file_pattern": "/data/train-*"}
    values.update(overrides)
    if not overrides:
        values = {}
    with pytest.raises(ValueError, match=message):
        DataConfig(**values).validate()


def test_unknown_keys_are_rejected_with_the_allowed_list():
    with pytest.raises(ValueError, match=r"Unknown DataConfig field\(s\) \['batch_size'\]"):
        DataConfig.from_dict({"file_pattern": "x", "batch_size": 3})


@pytest.mark.parametrize("old, new", [("center_crop", "single"),
                                      ("shorter_side_center_crop", "shorter_side"),
                                      ("squash_center_crop", "squash"),
                                      ("released", "shorter_side"),
                                      ("released_squash", "squash"),
                                      ("released_pytorchcv", "pytorchcv")])
def test_earlier_eval_protocol_names_map_to_the_same_crop(old, new):
    from polynet_tf.data import protocols

    with pytest.warns(DeprecationWarning, match=f"it is '{new}'"):
        config = DataConfig(file_pattern="x", is_training=False, eval_protocol=old)
    assert config.eval_protocol == new
    assert new in protocols.PROTOCOL_NAMES
