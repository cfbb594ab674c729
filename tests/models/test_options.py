"""One schema of model options: the builder, the config and the factory read `ModelOptions`."""

import dataclasses

import numpy as np
import pytest

from polynet_tf.configs import base
from polynet_tf.configs.experiment import ExperimentConfig, ModelConfig
from polynet_tf.models import PolyNet
from polynet_tf.models.factory import build_model
from polynet_tf.models.options import ModelOptions

SPEC = "A: ir*1 | B: ir*1 | C: ir*1"


def test_config_model_section_has_every_option_with_the_builders_default():
    config = ModelConfig()
    for field in dataclasses.fields(ModelOptions):
        assert getattr(config, field.name) == getattr(ModelOptions(), field.name), field.name
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert names == set(ModelOptions.field_names()) | {"architecture", "num_classes"}


def test_unknown_option_is_an_error_naming_it_in_the_builder():
    with pytest.raises(TypeError, match="width_multiplyer"):
        PolyNet(SPEC, input_shape=(75, 75, 3), width_multiplyer=0.1)


def test_unknown_option_is_an_error_naming_it_in_the_config():
    with pytest.raises(base.ConfigError, match="model.width_multiplyer"):
        base.from_dict(ExperimentConfig, {"model": {"width_multiplyer": 0.1}})


def test_invalid_option_value_same_message_in_builder_and_config():
    with pytest.raises(ValueError, match="dropout_rate"):
        PolyNet(SPEC, input_shape=(75, 75, 3), dropout_rate=1.5)
    config = ExperimentConfig(model=ModelConfig(dropout_rate=1.5))
    with pytest.raises(base.ConfigError, match="dropout_rate"):
        config.validate("train")


def test_factory_passes_every_option_through():
    # kernel_initializer and seed reach the builder: same options, same weights.
    config = ModelConfig(architecture=SPEC, num_classes=3, width_multiplier=0.1,
                         kernel_initializer="zeros", seed=3)
    model = build_model(config, image_size=75)
    direct = PolyNet(SPEC, input_shape=(75, 75, 3), classes=3, classifier_activation=None,
                     **ModelOptions.of(config).as_kwargs())
    stem_kernels = [w for w in model.weights if "stem" in w.path and "kernel" in w.path]
    assert stem_kernels and all(np.all(w.numpy() == 0) for w in stem_kernels)
    assert len(model.weights) == len(direct.weights)
    for a, b in zip(model.weights, direct.weights):
        assert a.shape == b.shape
