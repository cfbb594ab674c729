"""Fine-tuning: start a run from another network's weights, with a new head.

The experiment's `init` section (`polynet_tf.configs.InitConfig`) names the
source: the released ImageNet weights (`imagenet`), a `.weights.h5` file, or
a checkpoint of any training run (its `model_dir` or a checkpoint prefix; the
run's `params.yaml` tells its architecture). The trainer builds its own model
as usual, then, before the first step and the same on every worker:

- `prepare_model` freezes what the config asks (the stages up to one, the
  whole backbone, or BatchNorm alone) before the optimizer sees the
  trainable variables;
- `initialize_model` builds the source network, loads it, and copies every
  weight of the backbone into the model. A weight missing from the source,
  one left over in it or one of another shape is an error naming the weight
  and both shapes, raised before anything is assigned. The classifier
  (`predictions`) is copied when its shape fits and is otherwise new (another
  `num_classes`). What was loaded and what is new is logged and written to
  `model_dir/finetune_report.json`;
- `build_head_optimizer` gives the head its own optimizer (same kind, learning
  rate x `head_learning_rate_multiplier`) when the multiplier is not 1:
  RMSProp and Adam divide by the gradients' running magnitude, so scaling
  the head's gradients would not scale its steps; a second optimizer does.
  `apply_gradients` routes each gradient to its optimizer.

Layer names of a PolyNet, bottom to top: `stem`, `stage_a_<i>`, `reduction_a`,
`stage_b_<i>`, `reduction_b`, `stage_c_<i>`, then `avg_pool`, `dropout`,
`predictions`.
"""

import contextlib
import dataclasses
import re

import keras
from absl import logging

from polynet_tf import fileio, runs
from polynet_tf.configs.experiment import FREEZE_CHOICES, FREEZE_LEVELS

# Backbone parts bottom to top; `freeze: X` freezes X and everything below it.
PARTS = FREEZE_CHOICES[1:-1]
HEAD_LAYER = "predictions"
REPORT_FILE = "finetune_report.json"
PARAMS_FILE = runs.PARAMS_FILE
CHECKPOINT_SUBDIR = runs.CHECKPOINTS_SUBDIR
_KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


class FineTuneError(ValueError):
    """The initial weights cannot be used: names the weight or file, and the remedy."""


def layer_part(name):
    """The backbone part of a top-level layer name ("stage_b_3" -> "stage_b"); None for the head."""
    match = re.fullmatch(r"(stage_[abc])_\d+", name)
    if match:
        return match.group(1)
    return name if name in PARTS else None


def is_head_variable(variable):
    """Whether `variable` belongs to the classifier (`predictions/...`)."""
    return variable.path.startswith(HEAD_LAYER + "/")


def frozen_layers(model, freeze):
    """Top-level layers that `freeze` ("none", a part name or "backbone") freezes.

    Raises:
        FineTuneError: an unknown `freeze`, or a part the model does not have.
    """
    freeze = part_of_level(freeze)
    if freeze not in FREEZE_CHOICES:
        raise FineTuneError(
            f"init.freeze must be one of {list(FREEZE_CHOICES) + list(FREEZE_LEVELS)}; "
            f"received {freeze!r}.")
    if freeze == "none":
        return []
    parts = PARTS if freeze == "backbone" else PARTS[:PARTS.index(freeze) + 1]
    present = {layer_part(layer.name) for layer in model.layers}
    if freeze != "backbone" and freeze not in present:
        raise FineTuneError(
            f"init.freeze={freeze!r}: the model ({model.name}) has no {freeze!r} layers; its "
            f"parts are {[p for p in PARTS if p in present]}.")
    return [layer for layer in model.layers if layer_part(layer.name) in parts]


def part_of_level(freeze):
    """The part that `freeze: level_N` stops at ("level_3" -> "stage_b"); other values as given.

    Feature level N (`polynet_tf.models.features`) is computed by the stem
    (levels 0 and 1: one layer, frozen whole), stage A (2), stage B (3) or
    stage C (4), and freezing a part freezes everything below it.
    """
    return FREEZE_LEVELS.get(freeze, freeze)


def prepare_model(model, init_config):
    """Freezes what `init_config` asks; call before the optimizer is built.

    Frozen layers (`trainable = False`) keep their weights and, in Keras 3,
    also run their BatchNorms in inference mode, so their moving statistics
    stay fixed too. `batch_norm_inference` does the same for every
    BatchNormalization layer of the network (its scale and offset are then
    fixed as well, as in Keras's fine-tuning guide).

    Args:
        model: the built PolyNet.
        init_config: an `InitConfig`.

    Returns:
        dict: `frozen_layers` (names) and `frozen_batch_norms` (count).
    """
    frozen = frozen_layers(model, init_config.freeze)
    for layer in frozen:
        layer.trainable = False
    norms = 0
    if init_config.batch_norm_inference:
        # Keras has no public walk over nested layers; _flatten_layers is it.
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
                norms += 1
    return {"frozen_layers": [layer.name for layer in frozen], "frozen_batch_norms": norms}


# ------------------------------------------------------------- head optimizer
def build_head_optimizer(model, config, global_batch_size):
    """A second optimizer for the head, or None when the multiplier is 1.

    Same optimizer and schedule as the rest of the network (warm-up, decay),
    with the base learning rate multiplied by
    `config.init.head_learning_rate_multiplier`.
    """
    from polynet_tf.training.optimization import build_optimizer  # noqa: PLC0415

    multiplier = config.init.head_learning_rate_multiplier
    head = [v for v in model.trainable_variables if is_head_variable(v)]
    if multiplier == 1.0 or not head:
        return None
    schedule = dataclasses.replace(
        config.schedule, base_learning_rate=config.schedule.base_learning_rate * multiplier)
    optimizer, _ = build_optimizer(config.optimizer, schedule, global_batch_size)
    optimizer.build(head)
    return optimizer


def apply_gradients(optimizer, head_optimizer, gradients, variables):
    """Applies gradients; the head's through `head_optimizer` when there is one."""
    if head_optimizer is None:
        optimizer.apply_gradients(zip(gradients, variables))
        return
    pairs = list(zip(gradients, variables))
    optimizer.apply_gradients([(g, v) for g, v in pairs if not is_head_variable(v)])
    head_optimizer.apply_gradients([(g, v) for g, v in pairs if is_head_variable(v)])


# ------------------------------------------------------------------- loading
def initialize_model(model, config, report_dir=None, strategy=None, init_from=None):
    """Copies the source network's weights named by `config.init` into `model`.

    Args:
        model: the built model (inside the strategy's scope); nothing in it
            changes when this raises.
        config: the `ExperimentConfig`.
        report_dir: where `finetune_report.json` goes (the chief's
            `model_dir`); None writes nothing.
        strategy: the distribution strategy; the weights are assigned in its
            scope (every worker reads the same source and assigns the same
            values).
        init_from: the trainer's growth checkpoint (`--init_from`); it cannot
            be combined with fine-tuning.

    Returns:
        The report (dict): source, loaded weights, new weights, frozen layers.

    Raises:
        FineTuneError: a source that cannot be read or does not fit, naming
            the weight and both shapes.
    """
    init = config.init
    if init_from:
        raise FineTuneError(
            f"Give either --init_from ({init_from}: growth by insertion) or init.weights "
            f"({init.weights}: fine-tuning), not both.")
    source, description = _load_source(init, config.model)
    loaded, new = _match(source, model, description)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        for target, value in loaded:
            target.assign(value)
    report = {
        "source": description,
        "target": {"architecture": config.model.architecture,
                   "num_classes": config.model.num_classes},
        "loaded": [{"weight": t.path, "shape": list(t.shape)} for t, _ in loaded],
        "new": new,
        "freeze": init.freeze,
        "frozen_layers": [layer.name for layer in frozen_layers(model, init.freeze)],
        "batch_norm_inference": init.batch_norm_inference,
        "head_learning_rate_multiplier": init.head_learning_rate_multiplier,
    }
    logging.info(
        "Fine-tuning from %s (%s): loaded %d weights; new: %s; frozen: %s", init.weights,
        description["architecture"], len(loaded),
        ", ".join(f"{n['weight']} {n['shape']}" for n in new) or "none",
        ", ".join(report["frozen_layers"]) or "none")
    if report_dir is not None:
        fileio.makedirs(report_dir)
        fileio.write_json(fileio.join(report_dir, REPORT_FILE), report)
    return report


def _load_source(init, model_config):
    """Builds and loads the source network; returns it and its description.

    The published weights and a run's checkpoint load through
    `polynet_tf.loading.load_model`, as evaluation and export do; a weights
    file is built with the model's own options and the file's architecture
    and classes.
    """
    from polynet_tf.loading import load_model  # noqa: PLC0415
    from polynet_tf.models.factory import build_model  # noqa: PLC0415

    weights = init.weights
    if weights == "imagenet":
        # The published weights of the configured preset (validate() checked it has them).
        loaded = load_model(weights=weights, architecture=model_config.architecture,
                            classifier_activation=None)
        return loaded.model, {"kind": "imagenet", "path": "imagenet",
                              "architecture": loaded.description["architecture"],
                              "num_classes": loaded.num_classes}
    if weights.endswith(_KERAS_SUFFIXES):
        if not fileio.isfile(weights):
            raise FineTuneError(f"init.weights: the weights file {weights!r} does not exist.")
        classes = init.num_classes or _classes_in_weights_file(weights)
        architecture = init.architecture or model_config.architecture
        source_config = dataclasses.replace(model_config, architecture=architecture,
                                            num_classes=classes)
        source = build_model(source_config)
        _load_file(source, weights)
        return source, {"kind": "weights_file", "path": weights,
                        "architecture": architecture, "num_classes": classes}
    prefix, params = _checkpoint_and_params(weights)
    source_config = _run_model_config(params)
    if init.architecture and init.architecture != source_config.architecture:
        raise FineTuneError(
            f"init.architecture={init.architecture!r} contradicts the run's {params} "
            f"(model.architecture {source_config.architecture!r}); leave init.architecture "
            "unset for a checkpoint.")
    try:
        loaded = load_model(checkpoint=prefix, config=params, classifier_activation=None)
    except ValueError as error:
        raise FineTuneError(
            f"The checkpoint {prefix} does not fit the architecture its {PARAMS_FILE} "
            f"names ({source_config.architecture}): {error}") from None
    return loaded.model, {"kind": "checkpoint", "path": prefix, "params": params,
                          "architecture": source_config.architecture,
                          "num_classes": source_config.num_classes}


def _classes_in_weights_file(path):
    """Classes of the head stored in a Keras 3 `.weights.h5` file (its one Dense layer)."""
    import h5py  # noqa: PLC0415

    with fileio.local_file_for_reading(path) as local, h5py.File(local, "r") as handle:
        layers = handle.get("layers")
        dense = [name for name in (layers or {}) if re.fullmatch(r"dense(_\d+)?", name)]
        if len(dense) == 1 and "vars/1" in layers[dense[0]]:
            return int(layers[dense[0]]["vars/1"].shape[0])
    raise FineTuneError(
        f"Cannot tell how many classes the head in {path!r} has (no single Dense layer in a "
        "Keras 3 weights file); set init.num_classes.")


def _load_file(source, path):
    from polynet_tf.grow.checkpoints import load_source_weights  # noqa: PLC0415
    from polynet_tf.grow.errors import GrowthError  # noqa: PLC0415

    with fileio.local_file_for_reading(path) as local:
        try:
            load_source_weights(source, local)
        except GrowthError as error:
            raise FineTuneError(
                f"init.weights {path!r} does not fit its architecture "
                f"{source.name!r}: {error.reason} (set init.architecture and "
                "init.num_classes to the file's; width_multiplier and the other model "
                "options are the model's).") from None


def _checkpoint_and_params(path):
    """(checkpoint prefix, params.yaml of its run) of a model_dir, checkpoints/ or prefix."""
    try:
        prefix, folder = runs.find_checkpoint(path)
    except FileNotFoundError:
        raise FineTuneError(
            f"init.weights {path!r} does not exist: give 'imagenet', a .weights.h5 file, a "
            "training model_dir or a checkpoint prefix (with its .index file).") from None
    if prefix is None:
        raise FineTuneError(
            f"init.weights: no checkpoint in {folder!r}; give 'imagenet', a .weights.h5 "
            "file, a training model_dir or a checkpoint prefix like "
            "model_dir/checkpoints/ckpt-600.")
    params = runs.params_beside(folder)
    if params:
        return prefix, params
    raise FineTuneError(
        f"init.weights {path!r}: no {PARAMS_FILE} beside the checkpoint or in its run "
        "directory, so its architecture is unknown; export its weights to a .weights.h5 "
        "file and set init.architecture and init.num_classes.")


def _run_model_config(params):
    from polynet_tf.configs import base  # noqa: PLC0415
    from polynet_tf.configs.experiment import ModelConfig  # noqa: PLC0415

    values = base.load_yaml(params)
    try:
        return base.from_dict(ModelConfig, values.get("model") or {}, "model")
    except base.ConfigError as error:
        raise FineTuneError(f"{params}: {error}") from None


def _match(source, model, description):
    """Pairs (target variable, value) to load, and the new (head) weights.

    Raises:
        FineTuneError: a backbone weight missing from the source, left over in
            it, or of another shape (naming the weight and both shapes).
    """
    from_source = {v.path: v for v in source.weights}
    where = f"{description['path']} ({description['architecture']})"
    loaded, new, problems = [], [], []
    for target in model.weights:
        value = from_source.pop(target.path, None)
        shape = tuple(target.shape)
        if is_head_variable(target):
            if value is not None and tuple(value.shape) == shape:
                loaded.append((target, value))
            else:
                new.append({"weight": target.path, "shape": list(shape),
                            "source_shape": None if value is None else list(value.shape)})
        elif value is None:
            problems.append(f"`{target.path}` {shape} is missing from the source")
        elif tuple(value.shape) != shape:
            problems.append(f"`{target.path}` has shape {shape} in the model but "
                            f"{tuple(value.shape)} in the source")
        else:
            loaded.append((target, value))
    left = [path for path in from_source if not path.startswith(HEAD_LAYER + "/")]
    problems += [f"the source's `{path}` {tuple(from_source[path].shape)} has no place in "
                 "the model" for path in left]
    if problems:
        raise FineTuneError(
            f"The initial weights {where} do not fit the model "
            f"({model.name}); {len(problems)} problem(s), first: {problems[0]}. The "
            "backbone must be the same network (architecture, width_multiplier, "
            "path_gates); only the head may differ (num_classes).")
    return [(t, v.value) for t, v in loaded], new
