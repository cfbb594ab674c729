"""`PolyNet()`: the keras.applications-style builder of every PolyNet.

Reference: Zhang, Li, Loy, Lin, "PolyNet: A Pursuit of Structural Diversity in
Very Deep Networks", CVPR 2017. The released network is docs/design.md section 1.

    stem -> stage A -> reduction A -> stage B -> reduction B -> stage C
         -> global average pool -> dropout 0.2 -> dense (classes)
"""

import os

import keras

from polynet_tf.layers import (
    BatchNormSettings,
    PolyInceptionModule,
    ReductionA,
    ReductionB,
    Stem,
)
from polynet_tf.models import features, schedules
from polynet_tf.models.architectures import presets_with_weights, resolve_architecture
from polynet_tf.models.options import ModelOptions

# The smallest input whose stage-C feature map is at least 1x1 (stride-2
# valid convs and pools: 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1).
MIN_INPUT_SIZE = 75


def PolyNet(
    architecture="very_deep",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    features_only=False,
    out_indices=None,
    **options,
):
    """Instantiates a PolyNet (any member of the PolyInception family).

    Args:
        architecture: a preset name (`polynet_tf.list_architectures()`, default
            the released "very_deep") or a stage spec such as
            "A: 2way*5 | B: (poly3, 2way)*5 | C: ir*5".
        include_top: whether to include the classifier (pool, dropout, dense).
        weights: None (random initialization), the name of the preset's
            published weights ("imagenet" for "very_deep": the preset's
            `PretrainedConfig`) or the path (or URI) of a `.weights.h5`
            or `.keras` file that fits this model exactly (with
            `include_top=False`, the file's classifier may go unused): a
            missing, unexpected or differently shaped weight is an error
            naming it.
        input_tensor: optional Keras tensor (output of `keras.Input()`) to use
            as the model's input.
        input_shape: optional (height, width, channels); height and width at
            least 75 (or None). Defaults to (size, size, 3) with the top, where
            size is the architecture's default (331 for very_deep, else 299),
            and (None, None, 3) without it.
        pooling: without the top: None (4D feature map), "avg" or "max".
        classes: number of classes of the top; the published weights' with them
            (1000 for ImageNet).
        classifier_activation: activation of the top layer; "softmax" or None
            with pretrained weights.
        name: model name (default "polynet_<architecture>").
        features_only: with include_top=False and pooling=None, return
            the feature maps of the levels `out_indices` (a list, by level)
            instead of the stage-C map; the model's `feature_info` names
            each level's layer, channels and stride. See
            `polynet_tf.models.features`: level 0 is the stem's third conv
            (stride 2), 1 the stem's mixed 4a (stride 4), 2-4 the outputs of
            stages A-C (strides 8, 16, 32). Layers above the highest level
            are left out; a weights file of the whole network still loads.
        out_indices: the levels to return (0-4, negative ones count from
            the top; default all five). Only with `features_only`.
        **options: width_multiplier (scales every channel count, 1.0),
            residual_scale (float, {"start", "end"} schedule or per-module
            list; default: the architecture's), drop_path_rate (float: linear
            0 -> rate from bottom to top module; or a schedule / list),
            dropout_rate (0.2), bn_epsilon (1e-5), bn_momentum (0.99),
            synchronized_batch_norm (False), kernel_initializer
            ("glorot_uniform"), seed (stochastic-path masks), path_gates
            (False; a trainable scalar per path, used by function-preserving
            growth), rematerialize (False; recompute each PolyInception
            module, the stem (in four segments) and both reductions in the
            backward pass instead of keeping their activations: less memory,
            same gradients and BatchNorm statistics; training needs the
            TensorFlow backend).

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: invalid arguments (each message names the argument), a
            feature level that does not exist, or an input too small for
            the levels asked for.
        TypeError: unknown options (`polynet_tf.models.options.ModelOptions`
            lists them).
    """
    options = ModelOptions.from_kwargs(options).as_kwargs()
    preset, spec = resolve_architecture(architecture)
    published = _validate_weights(weights, preset, include_top, classes, options)
    _validate_head(include_top, pooling, classes, classifier_activation, weights)
    levels = features.resolve_out_indices(features_only, out_indices, include_top, pooling)
    default_size = preset.default_size if preset else 299
    input_shape = _input_shape(input_shape, input_tensor, default_size, include_top, weights,
                               levels)
    img_input = _model_input(input_tensor, input_shape)

    norm = BatchNormSettings(
        epsilon=options["bn_epsilon"],
        momentum=options["bn_momentum"],
        synchronized=options["synchronized_batch_norm"],
    )
    common = dict(
        width_multiplier=options["width_multiplier"],
        batch_norm=norm,
        kernel_initializer=options["kernel_initializer"],
        rematerialize=options["rematerialize"],
    )
    betas = schedules.residual_scales(
        options["residual_scale"]
        if options["residual_scale"] is not None
        else (preset.residual_scale if preset else 0.3),
        spec.num_modules,
    )
    rates = schedules.drop_path_rates(options["drop_path_rate"], spec.num_modules)

    stem_levels = sorted(features.STEM_PARTS) if levels else []
    x = Stem(name="stem", feature_parts=[features.STEM_PARTS[i] for i in stem_levels],
             **common)(img_input)
    level_maps = {}
    if levels:
        *stem_maps, x = x
        level_maps.update(zip(stem_levels, stem_maps))
    k = 0
    for stage in features.stages_needed(spec, levels) if levels else spec.stages:
        if stage.name == "B":
            x = ReductionA(name="reduction_a", **common)(x)
        elif stage.name == "C":
            x = ReductionB(name="reduction_b", **common)(x)
        for index, module in enumerate(stage.modules):
            seed = None if options["seed"] is None else options["seed"] + k
            x = PolyInceptionModule(
                stage.name,
                module,
                residual_scale=betas[k],
                drop_path_rate=rates[k],
                seed=seed,
                path_gates=options["path_gates"],
                name=f"stage_{stage.name.lower()}_{index}",
                **common,
            )(x)
            k += 1
        level_maps[features.STAGE_LEVELS[stage.name]] = x

    if levels:
        x = [level_maps[level] for level in levels]
    elif include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(options["dropout_rate"], name="dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation,
                               name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    if name is None:
        name = f"polynet_{preset.name}" if preset else "polynet"
    model = keras.Model(inputs, x, name=name)
    unbuilt = ()
    if levels:
        # A plain attribute, as timm's: the levels are fixed by the builder's arguments.
        model.feature_info = features.feature_info(
            {level: level_maps[level] for level in levels}, features.level_layers(spec))
        unbuilt = features.unbuilt_layers(spec, levels)

    # The full model that the published checkpoint is converted into on first use. Built
    # without weights: built with them, it would convert the checkpoint itself, and then
    # again here.
    def full_model():
        return PolyNet(architecture=preset.name, weights=None)

    if published is not None and unbuilt:
        from polynet_tf.weights.pretrained import pretrained_weights_file  # noqa: PLC0415
        from polynet_tf.weights.weights_file import load_weights_file  # noqa: PLC0415

        path = pretrained_weights_file(
            published, preset.name,
            build_full_model=full_model)
        load_weights_file(model, path, allow_unused=("predictions",) + unbuilt)
    elif published is not None:
        # Lazy import: polynet_tf.weights (downloads, checkpoint conversion)
        # is needed only for pretrained weights.
        from polynet_tf.weights.pretrained import load_pretrained_weights  # noqa: PLC0415

        load_pretrained_weights(
            model, published, preset.name,
            build_full_model=full_model)
    elif weights is not None:
        # Strict: only a file that fits this model exactly loads (Keras's
        # load_weights ignores weights the model lacks); a file's classifier
        # may go unused by a model built without it, as with "imagenet".
        from polynet_tf.weights.weights_file import load_weights_file  # noqa: PLC0415

        load_weights_file(model, weights,
                          allow_unused=() if include_top else ("predictions",) + unbuilt)
    return model


def polyinception_modules(model):
    """The PolyInception modules of a PolyNet model, bottom to top."""
    return [layer for layer in model.layers if isinstance(layer, PolyInceptionModule)]


def set_path_drop_rates(model, drop_path_rate):
    """Sets the stochastic-path rates of a built model, without rebuilding it.

    Takes effect in training steps already traced (the rates are variables).

    Args:
        model: a model made by `PolyNet()`.
        drop_path_rate: float r for the paper's linear 0 -> r schedule (bottom
            to top), a {"start", "end"} schedule, or one rate per module.

    Returns:
        The list of rates set, bottom to top.

    Raises:
        ValueError: the model has no PolyInception modules, or bad rates.
    """
    modules = polyinception_modules(model)
    if not modules:
        raise ValueError(f"Model {model.name!r} has no PolyInception modules.")
    rates = schedules.drop_path_rates(drop_path_rate, len(modules))
    for module, rate in zip(modules, rates):
        module.set_drop_path_rate(rate)
    _recompile_jax_train_step(model)
    return rates


def _recompile_jax_train_step(model):
    """Makes a compiled JAX train step see the new rates from its next call.

    The rates are variables that deliberately stay out of the model's weights
    (weight files and parameter counts stay those of the paper's network).
    TensorFlow's and PyTorch's steps read them at every call, but a JAX step
    is a pure function of the tracked variables only: anything else is baked
    into it as a constant when it is compiled. Keras's JAX `fit` looks the
    step up before every call, so replacing it takes effect at the next step,
    also from a callback in the middle of `fit`.
    """
    if keras.backend.backend() == "jax" and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def _validate_weights(weights, preset, include_top, classes, options):
    """Checks `weights`; returns the preset's `PretrainedConfig` when it names one, else None."""
    if weights is None:
        return None
    if isinstance(weights, str) and preset is not None and weights in preset.pretrained:
        published = preset.pretrained[weights]
    elif isinstance(weights, str) and presets_with_weights(weights):
        raise ValueError(
            f"The {weights!r} weights are published only for architecture="
            f"{' or '.join(map(repr, presets_with_weights(weights)))}. Received: "
            f"architecture={preset.name if preset else 'a custom spec'!r}"
        )
    elif isinstance(weights, (str, os.PathLike)) and _weights_file_exists(weights):
        return None
    else:
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            "the name of published weights such as `imagenet` (pre-training on ImageNet), "
            f"or the path to the weights file to be loaded. Received: weights={weights}"
        )
    if options["width_multiplier"] != 1.0:
        raise ValueError(
            f"Published weights need width_multiplier=1.0. Received: weights={weights!r}, "
            f"width_multiplier={options['width_multiplier']}"
        )
    if include_top and classes != published.num_classes:
        raise ValueError(
            f'If using `weights="{weights}"` with `include_top=True`, `classes` '
            f"should be {published.num_classes}. Received classes={classes}"
        )
    return published


def _weights_file_exists(path):
    # Lazy import: the check goes through tf.io.gfile (paths may be URIs), which
    # model code does not use directly.
    from polynet_tf.weights.weights_file import exists  # noqa: PLC0415

    return exists(path)


def _validate_head(include_top, pooling, classes, classifier_activation, weights):
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}"
        )
    if include_top and (not isinstance(classes, int) or isinstance(classes, bool)
                        or classes < 1):
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if weights is not None and include_top and classifier_activation not in ("softmax", None):
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the "
            "`classifier_activation` argument when using pretrained weights, with "
            f"`include_top=True`; Received: classifier_activation={classifier_activation}"
        )


def _input_shape(input_shape, input_tensor, default_size, include_top, weights, levels=None):
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        size = default_size if include_top else None
        return (size, size, 3)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        input_shape = None
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be a tuple of three integers (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    height, width, channels = input_shape
    if weights is not None and channels != 3:
        raise ValueError(
            "The input must have 3 channels when loading pretrained weights; "
            f"Received: input_shape={input_shape}"
        )
    if channels is None or channels < 1:
        raise ValueError(
            f"The channel dimension must be known. Received: input_shape={input_shape}")
    if levels:
        features.check_input_size(input_shape, levels)
        return input_shape
    for size in (height, width):
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; "
                f"Received: input_shape={input_shape}"
            )
    return input_shape


def _model_input(input_tensor, input_shape):
    if input_tensor is None:
        return keras.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor
