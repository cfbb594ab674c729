"""Between `polynet_tf.PolyNet()` models and their keras-hub counterparts, weight for weight.

`PolyNetBackbone` is built by `PolyNet(include_top=False)`, and keras-hub's
classifier head has PolyNet's layers (pool, dropout, dense "predictions"), so
the two hold the same variables under the same layer names. The copies below
check that each pair of layers is configured alike (module types, residual
scales, widths, BatchNorm settings) and that every variable finds its
counterpart of the same shape, so the result computes the same function.
"""

import keras

from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.hub.classifier import PolyNetImageClassifier
from polynet_tf.models.polynet import PolyNet

# Config entries that do not change what a trained layer computes at inference.
# feature_parts: which inner maps the stem also returns (the backbone's feed
# pyramid_outputs), not its weights.
_IGNORED_CONFIG = ("name", "trainable", "dtype", "kernel_initializer", "seed",
                   "drop_path_rate", "feature_parts")


def _weighted_layers(model):
    """{name: layer} of the layers holding variables, the backbone's unnested."""
    layers = {}
    for layer in model.layers:
        if isinstance(layer, PolyNetBackbone):
            layers.update(_weighted_layers(layer))
        elif layer.weights:
            layers[layer.name] = layer
    return layers


def _comparable(config):
    return {key: value for key, value in config.items() if key not in _IGNORED_CONFIG}


def copy_weights(source, target):
    """Copies every variable of `source` into the same-named layer of `target`.

    Args:
        source: a `PolyNet()` model, `PolyNetBackbone` or `PolyNetImageClassifier`.
        target: another of these, of the same architecture.

    Raises:
        ValueError: a layer missing on either side, configured differently,
            or a variable of another shape (the message names the layer).
    """
    from_layers, to_layers = _weighted_layers(source), _weighted_layers(target)
    if set(from_layers) != set(to_layers):
        missing = sorted(set(from_layers) ^ set(to_layers))
        raise ValueError(
            f"{source.name!r} and {target.name!r} are not the same network: layers "
            f"{missing[:5]} exist on one side only (another architecture, or a top on one side)."
        )
    for name, layer in to_layers.items():
        source_config = _comparable(from_layers[name].get_config())
        target_config = _comparable(layer.get_config())
        if source_config != target_config:
            keys = sorted(k for k in set(source_config) | set(target_config)
                          if source_config.get(k) != target_config.get(k))
            raise ValueError(
                f"Layer {name!r} is configured differently in {source.name!r} and "
                f"{target.name!r} ({', '.join(keys)}: {[source_config.get(k) for k in keys]} vs "
                f"{[target_config.get(k) for k in keys]}). Build both with the same "
                "architecture and options."
            )
        values = from_layers[name].get_weights()
        shapes = [tuple(v.shape) for v in layer.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise ValueError(f"Layer {name!r}: variable shapes differ between "
                             f"{source.name!r} and {target.name!r}.")
        layer.set_weights(values)


def to_polynet(model):
    """The `polynet_tf.PolyNet()` model computing what a keras-hub PolyNet computes.

    Args:
        model: a `PolyNetImageClassifier` (-> `PolyNet()` with its top) or a
            `PolyNetBackbone` (-> `PolyNet(include_top=False)`).

    Returns:
        A new functional `keras.Model` from `PolyNet()`, holding copies of
        `model`'s weights.

    Raises:
        ValueError: `model` is neither, or pools with "max".
    """
    if isinstance(model, PolyNetImageClassifier):
        kwargs = model.polynet_kwargs()
    elif isinstance(model, PolyNetBackbone):
        kwargs = dict(model.polynet_kwargs(), include_top=False,
                      input_shape=model.image_shape)
    else:
        raise ValueError("`model` must be a PolyNetImageClassifier or a PolyNetBackbone. "
                         f"Received: {type(model).__name__}")
    polynet = PolyNet(weights=None, **kwargs)
    copy_weights(model, polynet)
    return polynet


def from_polynet(model, architecture="very_deep", preprocessor=None, **options):
    """The keras-hub classifier (or backbone) of a model built by `PolyNet()`.

    A `PolyNet()` model does not record its arguments: pass the architecture
    and the options it was built with (they are checked layer by layer).

    Args:
        model: a `PolyNet()` model, with or without its top (without: pooling
            None).
        architecture: its architecture preset or spec.
        preprocessor: the classifier's preprocessor (None: none).
        **options: its `PolyNet()` options (width_multiplier, residual_scale,
            bn_epsilon, ...); `dropout_rate` is read from the model.

    Returns:
        A `PolyNetImageClassifier` when `model` has the top (same classes,
        activation and dropout), else a `PolyNetBackbone`; with copies of
        `model`'s weights.

    Raises:
        ValueError: the options do not describe `model` (named layer).
    """
    options.pop("dropout_rate", None)
    backbone = PolyNetBackbone(architecture, **options)
    names = [layer.name for layer in model.layers]
    if "predictions" not in names:
        copy_weights(model, backbone)
        return backbone
    head = model.get_layer("predictions")
    activation = keras.activations.serialize(head.activation)
    dropout = model.get_layer("dropout").rate if "dropout" in names else 0.0
    classifier = PolyNetImageClassifier(
        backbone, num_classes=head.units, preprocessor=preprocessor,
        activation=None if activation == "linear" else activation, dropout=dropout,
    )
    copy_weights(model, classifier)
    return classifier
