"""Inference networks with every BatchNorm folded into its convolution.

At inference a BatchNorm is an affine map per channel, so a conv followed by
it is one conv with a bias:

    BN(conv(x, W)) = conv(x, W * s) + (beta - mean * s),  s = gamma / sqrt(var + eps)

The folded network computes the same function as the original in inference
mode (up to float rounding), with a third fewer ops and no BatchNorm
statistics to read. A released poly-3 block shares each conv between three
BatchNorms; folding gives each application its own conv with bias, so the
folded network holds those kernels three times (very_deep: 95.7 M parameters,
statistics included, become 120.6 M).
"""

import keras
import numpy as np

from polynet_tf.layers import ConvBN

# The top classifier stays in float32 under a low-precision policy, so that
# logits and probabilities come back in float32 (the usual end of a Keras
# mixed-precision model).
_FLOAT32_LAYERS = ("predictions",)
_SEED_STATE = "seed_generator_state"


def fold_batch_norms(model, dtype_policy=None):
    """An inference copy of a PolyNet model, BatchNorms folded into the convs.

    Works for every network `PolyNet()` builds (any architecture, width, top or
    no top) and on every Keras backend; the result is a plain functional
    model of registered layers (it saves and loads with `safe_mode=True`) and
    is meant for inference only: it has no BatchNorm layers to train.

    Args:
        model: a model made by `PolyNet()` (BatchNorms not yet folded).
        dtype_policy: None (the original model's policies) or a Keras dtype
            policy name for every layer but the input and the top classifier,
            e.g. "mixed_bfloat16" (bfloat16 compute, float32 weights): the
            bfloat16 inference option on CPUs with AVX512_BF16.

    Returns:
        A new `keras.Model` whose inference outputs equal `model`'s.

    Raises:
        ValueError: the model is already folded, or is not made of the layers
            `PolyNet()` builds (a layer or weight of one has no counterpart in
            the other; the message names it).
    """
    if is_folded(model):
        raise ValueError(f"Model {model.name!r} is already folded.")
    config = _folded_config(model.get_config(), dtype_policy)
    folded = keras.Model.from_config(config)
    _assign_folded_weights(model, folded)
    return folded


def is_folded(model):
    """Whether `model` has conv units with their BatchNorms folded (made by `fold_batch_norms`).

    Args:
        model: a Keras model or layer.

    Returns:
        A Python bool.
    """
    return any(unit.batch_norm.folded for unit in _conv_units(model))


def has_batch_norms_to_fold(model):
    """Whether `model` has conv units whose BatchNorms are not folded (as `PolyNet()` builds them).

    Args:
        model: a Keras model or layer.

    Returns:
        A Python bool.
    """
    return any(not unit.batch_norm.folded for unit in _conv_units(model))


def _conv_units(model):
    return (unit for unit in _sublayers(model) if isinstance(unit, ConvBN))


def _folded_config(config, dtype_policy):
    """`config` with `batch_norm.folded` set everywhere (and the dtype policy replaced)."""
    policy = None if dtype_policy is None else keras.dtype_policies.serialize(
        keras.dtype_policies.get(dtype_policy))

    def rewrite(value, keep_dtype):
        if isinstance(value, list):
            return [rewrite(item, keep_dtype) for item in value]
        if not isinstance(value, dict):
            return value
        if value.get("class_name") == "InputLayer" or value.get("name") in _FLOAT32_LAYERS:
            keep_dtype = True
        out = {}
        for key, item in value.items():
            if key == "batch_norm" and isinstance(item, dict):
                item = {**item, "folded": True}
            elif (key == "dtype" and policy is not None and not keep_dtype
                  and isinstance(item, dict)):
                item = policy
            else:
                item = rewrite(item, keep_dtype)
            out[key] = item
        return out

    return rewrite(config, False)


def _sublayers(layer, seen=None):
    """`layer` and every layer it holds, depth first, in construction order."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    children = layer.layers if isinstance(layer, keras.Model) else vars(layer).values()
    for child in children:
        if isinstance(child, keras.layers.Layer):
            yield from _sublayers(child, seen)


def _assign_folded_weights(original, folded):
    units = [u for u in _sublayers(original) if isinstance(u, ConvBN)]
    folded_units = [u for u in _sublayers(folded) if isinstance(u, ConvBN)]
    if [u.path for u in units] != [u.path for u in folded_units]:
        raise ValueError(
            f"The conv units of {original.name!r} and its folded copy differ; "
            "fold_batch_norms takes models made by PolyNet()."
        )
    handled = set()
    for unit, folded_unit in zip(units, folded_units):
        kernel = keras.ops.convert_to_numpy(unit.conv.kernel).astype(np.float64)
        for norm, conv in zip(unit.norms, folded_unit.folded_convs):
            gamma, beta, mean, variance = (
                keras.ops.convert_to_numpy(v).astype(np.float64)
                for v in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
            scale = gamma / np.sqrt(variance + norm.epsilon)
            conv.kernel.assign((kernel * scale).astype(conv.kernel.dtype))
            conv.bias.assign((beta - mean * scale).astype(conv.bias.dtype))
        handled.update(id(v) for v in unit.variables)
        handled.update(id(v) for v in folded_unit.variables)
    # Everything outside the conv units (classifier, path gates, seed
    # states) is copied as it is; both models were built from one config, so
    # these variables come in the same order. Seed states are matched by
    # order only: their paths are neither unique nor stable (every module's
    # is "path_seed/seed_generator_state"; Dropout's gets a counter).
    rest = [v for v in original.variables if id(v) not in handled]
    folded_rest = [v for v in folded.variables if id(v) not in handled]
    for index in range(max(len(rest), len(folded_rest))):
        source = rest[index] if index < len(rest) else None
        target = folded_rest[index] if index < len(folded_rest) else None
        if (source is None or target is None or source.name != target.name
                or tuple(source.shape) != tuple(target.shape)
                or (source.path != target.path and source.name != _SEED_STATE)):
            name = (target if target is not None else source).path
            raise ValueError(
                f"Weight {name!r} has no counterpart of the same shape in the other model "
                f"({original.name!r} and its folded copy); fold_batch_norms takes models "
                "made by PolyNet()."
            )
        target.assign(keras.ops.convert_to_numpy(source))
