"""Builds a PolyNet from a model configuration (`polynet_tf.configs.ModelConfig`)."""

import dataclasses

from polynet_tf.models.options import ModelOptions
from polynet_tf.models.polynet import PolyNet


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
    options = ModelOptions(**{key: values[key] for key in ModelOptions.field_names()
                              if key in values}).as_kwargs()
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
