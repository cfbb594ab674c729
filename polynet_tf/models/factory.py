"""Builds a PolyNet from a model configuration (`polynet_tf.configs.ModelConfig`)."""

import dataclasses

from polynet_tf.models.polynet import PolyNet

_OPTION_FIELDS = (
    "width_multiplier", "residual_scale", "drop_path_rate", "dropout_rate", "bn_epsilon",
    "bn_momentum", "synchronized_batch_norm", "path_gates", "seed", "rematerialize",
)


def build_model(model_config, image_size=None, classifier_activation=None, name=None):
    """A `PolyNet()` from the fields of a model configuration.

    Args:
        model_config: a `ModelConfig` (or any object with its fields).
        image_size: input height and width; None builds a model that takes
            any size.
        classifier_activation: None for logits (training), "softmax" for
            probabilities.
        name: model name.

    Returns:
        A `keras.Model` with random weights.
    """
    values = (dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config)
              else dict(vars(model_config)))
    options = {key: values[key] for key in _OPTION_FIELDS if key in values}
    if options.get("residual_scale") is None:
        options.pop("residual_scale", None)
    shape = (image_size, image_size, 3) if image_size else (None, None, 3)
    return PolyNet(
        values["architecture"],
        weights=None,
        input_shape=shape,
        classes=values["num_classes"],
        classifier_activation=classifier_activation,
        name=name,
        **options,
    )
