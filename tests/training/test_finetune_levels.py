"""`init.freeze: level_N`: freezing by feature level, against the feature model's own layers."""

import pytest

from polynet_tf import PolyNet
from polynet_tf.configs import ConfigError, load_experiment
from polynet_tf.models.factory import build_model
from polynet_tf.training import finetune
from tests.training.conftest import TINY_CONFIG


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_level_freezes_exactly_the_layers_that_compute_it(level):
    config = load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/t-*,"
                             f"init.freeze=level_{level}")
    model = build_model(config.model, image_size=75)
    frozen = [layer.name for layer in finetune.frozen_layers(model, config.init.freeze)]
    # The feature model that stops at this level holds exactly the layers computing it.
    features = PolyNet(config.model.architecture, include_top=False, features_only=True,
                       out_indices=(level,), width_multiplier=config.model.width_multiplier)
    assert frozen == [layer.name for layer in features.layers[1:]]
    report = finetune.prepare_model(model, config.init)
    assert report["frozen_layers"] == frozen
    assert all(not model.get_layer(name).trainable for name in frozen)
    assert model.get_layer("predictions").trainable


def test_unknown_level_is_named():
    with pytest.raises(ConfigError, match=r"'init.freeze' must be one of .*'level_4'\], got "
                                          r"'level_5'"):
        load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/t-*,init.freeze=level_5")
