"""Feature maps by level: PolyNet as a backbone for detection and segmentation.

`PolyNet(include_top=False, features_only=True, out_indices=...)` returns
the feature maps of the levels asked for (timm's `features_only` /
`out_indices` / `feature_info` pattern). The five levels are the last map
at each stride of the network (Zhang et al., CVPR 2017, Fig. 10; sizes for
a 331x331 input at full width):

    level  layer          stride  channels  size at 331
    0      stem/conv3          2        64      163
    1      stem/mixed_4a       4       192       79
    2      stage_a (last)      8       384       39
    3      stage_b (last)     16      1152       19
    4      stage_c (last)     32      2048        9

The strides are nominal: PolyNet's stride-2 convolutions and pools are
unpadded, so a level's map is a few cells smaller than input / stride
(`feature_sizes` gives the exact sizes). The feature model has the
classifier's layers and weights, up to the highest level asked for.
"""

import dataclasses

import keras

# Parts of the stem (`polynet_tf.layers.Stem.parts`) whose outputs are levels 0 and 1.
STEM_PARTS = {0: 2, 1: 4}
# The level of each stage's output.
STAGE_LEVELS = {"A": 2, "B": 3, "C": 4}
# Layers built after each stage (the reduction into the next stage).
_REDUCTIONS = {"B": "reduction_a", "C": "reduction_b"}


@dataclasses.dataclass(frozen=True)
class FeatureLevel:
    """One level of a feature model (timm's `feature_info` entry).

    Attributes:
        index: the level, 0 (stem, stride 2) to 4 (stage C, stride 32).
        module: the layer whose output it is ("stem/conv3", "stage_b_9", ...).
        num_chs: channels of the map.
        reduction: nominal stride (input side / map side, before the few
            cells the unpadded reductions lose).
    """

    index: int
    module: str
    num_chs: int
    reduction: int


LEVEL_STRIDES = (2, 4, 8, 16, 32)
NUM_LEVELS = len(LEVEL_STRIDES)


def resolve_out_indices(features_only, out_indices, include_top, pooling):
    """The sorted levels a `PolyNet()` call asks for; None without `features_only`.

    Args:
        features_only: whether feature maps by level are asked for.
        out_indices: levels (0-4; negative ones count from the top, -1 is
            stage C), or None for all five.
        include_top: must be False with `features_only`.
        pooling: must be None with `features_only`.

    Returns:
        A sorted tuple of distinct levels, or None.

    Raises:
        ValueError: a level that does not exist, or arguments that do not go
            with feature maps.
    """
    if not features_only:
        if out_indices is not None:
            raise ValueError(
                "`out_indices` selects feature maps; pass `features_only=True` with it. "
                f"Received: out_indices={out_indices!r}")
        return None
    if include_top or pooling is not None:
        raise ValueError(
            "`features_only=True` returns feature maps: it needs include_top=False and "
            f"pooling=None. Received: include_top={include_top}, pooling={pooling!r}")
    if out_indices is None:
        return tuple(range(NUM_LEVELS))
    try:
        requested = list(out_indices)
    except TypeError:
        requested = [out_indices]
    levels = []
    for index in requested:
        if isinstance(index, bool) or not isinstance(index, int) or not (
                -NUM_LEVELS <= index < NUM_LEVELS):
            raise ValueError(
                f"Feature level {index!r} does not exist: PolyNet has levels 0-{NUM_LEVELS - 1} "
                f"(or -{NUM_LEVELS} to -1): {describe_levels()}. Received: "
                f"out_indices={out_indices!r}")
        levels.append(index % NUM_LEVELS)
    if not levels or len(set(levels)) != len(levels):
        raise ValueError(
            "`out_indices` must name one or more distinct levels (0-4). Received: "
            f"out_indices={out_indices!r}")
    return tuple(sorted(levels))


def describe_levels():
    """'0: stem/conv3 (stride 2), 1: stem/mixed_4a (stride 4), ...' for messages."""
    names = ("stem/conv3", "stem/mixed_4a", "stage A", "stage B", "stage C")
    return ", ".join(f"{i}: {name} (stride {s})"
                     for i, (name, s) in enumerate(zip(names, LEVEL_STRIDES)))


def _valid(size, strides=1):
    """Output side of an unpadded 3x3 convolution or pool."""
    return (size - 3) // strides + 1


def feature_sizes(size):
    """The side of each level's map for an input side `size` (any width).

    Stride-2 convolutions and pools are 3x3 unpadded, as are the stem's
    second conv and mixed 4a's last convs; everything else keeps the size.

    Returns:
        A tuple of five sides, level 0 to 4 (<= 0 where the input is too small).
    """
    conv3 = _valid(_valid(size, 2))
    mixed_4a = _valid(_valid(conv3, 2))
    stage_a = _valid(mixed_4a, 2)
    stage_b = _valid(stage_a, 2)
    return (conv3, mixed_4a, stage_a, stage_b, _valid(stage_b, 2))


def min_input_size(levels):
    """The smallest input side that gives every map the model computes at least 1x1.

    The stem always runs whole (its output feeds stage A), so levels 0-2 need
    what stage A needs.
    """
    top = max(max(levels), STAGE_LEVELS["A"])
    size = 1
    while min(feature_sizes(size)[:top + 1]) < 1:
        size += 1
    return size


def check_input_size(input_shape, levels):
    """Raises ValueError when a known side of `input_shape` is too small for `levels`."""
    needed = min_input_size(levels)
    for side in input_shape[:2]:
        if side is not None and side < needed:
            raise ValueError(
                f"Input size {input_shape[0]}x{input_shape[1]} is too small for feature "
                f"level {max(levels)}: levels up to {max(levels)} need at least "
                f"{needed}x{needed}. Use a larger input or lower `out_indices`. "
                f"Received: input_shape={tuple(input_shape)}")


def stages_needed(spec, levels):
    """The stages of `spec` a feature model builds: up to the highest level asked for."""
    return [stage for stage in spec.stages if STAGE_LEVELS[stage.name] <= max(levels)]


def unbuilt_layers(spec, levels):
    """Names of the classifier's layers a feature model leaves out (above its top level).

    A weights file of the whole network loads into the feature model with
    these (and `predictions`) left unused.
    """
    built = {stage.name for stage in stages_needed(spec, levels)}
    names = []
    for stage in spec.stages:
        if stage.name not in built:
            if stage.name in _REDUCTIONS:
                names.append(_REDUCTIONS[stage.name])
            names.extend(f"stage_{stage.name.lower()}_{i}" for i in range(len(stage.modules)))
    return tuple(names)


def feature_info(level_tensors, stage_names):
    """`FeatureLevel`s of built maps.

    Args:
        level_tensors: {level: Keras tensor}.
        stage_names: {level: name of the layer that produced it}.

    Returns:
        A tuple of `FeatureLevel`, by level.
    """
    return tuple(
        FeatureLevel(level, stage_names[level], int(tensor.shape[-1]), LEVEL_STRIDES[level])
        for level, tensor in sorted(level_tensors.items()))


def level_layers(spec):
    """Layer names of the five levels of an `ArchitectureSpec`."""
    names = {0: "stem/conv3", 1: "stem/mixed_4a"}
    for stage in spec.stages:
        names[STAGE_LEVELS[stage.name]] = f"stage_{stage.name.lower()}_{len(stage.modules) - 1}"
    return names


def feature_extractor(model, out_indices=None):
    """A model of the feature maps of a built PolyNet (a classifier too), sharing its weights.

    For a network already built and trained, e.g. a fine-tuned classifier
    (`polynet_tf.load_model(run_dir=...)`): no weights file, no rebuild. The
    maps are those of `PolyNet(..., features_only=True)` with the same
    weights; the stem's inner maps (levels 0 and 1) are computed by calling
    the stem's own parts again.

    Args:
        model: a model made by `PolyNet()`.
        out_indices: levels, as in `PolyNet(features_only=True)`.

    Returns:
        A `keras.Model` from `model`'s input to the list of maps, by level,
        with a `feature_info` attribute.

    Raises:
        ValueError: a level that does not exist, or a model without PolyNet's layers.
    """
    levels = resolve_out_indices(True, out_indices, False, None)
    names = {layer.name for layer in model.layers}
    if "stem" not in names:
        raise ValueError(f"Model {model.name!r} has no PolyNet stem layer named 'stem'.")
    maps, modules = {}, {0: "stem/conv3", 1: "stem/mixed_4a"}
    if min(levels) < STAGE_LEVELS["A"]:
        x = model.inputs[0]
        for index, part in enumerate(model.get_layer("stem").parts[:STEM_PARTS[1] + 1]):
            x = part(x)
            for level, part_index in STEM_PARTS.items():
                if part_index == index:
                    maps[level] = x
    for layer in model.layers:  # topological order: the last of each stage wins
        for stage, level in STAGE_LEVELS.items():
            if layer.name.startswith(f"stage_{stage.lower()}_"):
                maps[level], modules[level] = layer.output, layer.name
    missing = [level for level in levels if level not in maps]
    if missing:
        raise ValueError(f"Model {model.name!r} has no feature level {missing[0]}.")
    extractor = keras.Model(model.inputs[0], [maps[level] for level in levels],
                            name=f"{model.name}_features")
    extractor.feature_info = feature_info({level: maps[level] for level in levels}, modules)
    return extractor
