"""The model to export, with its preprocessing and class names.

Sources:

- a training run: `checkpoint` (its `model_dir`, `checkpoints/` folder or a
  checkpoint prefix) with the experiment configuration (`config_files`, or
  the run's `params.yaml`); the model outputs logits, softmax is added;
- a weights file with `config_files` (model and eval data of an experiment)
  or with a preset `architecture`;
- `weights="imagenet"`: the published weights of a preset (its
  `PretrainedConfig`).

Preprocessing: the model's `InputContract`, as `polynet_tf.loading` resolves
it: the experiment's `eval_data` (protocol, image size, mean and std); for
presets their published weights' contract ("squash": the whole image squashed
to 378x378, centre 331, for `very_deep`) or the "single" centre crop at the
preset's size, with the ImageNet mean and std (`preprocess_input`).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import keras

from polynet_tf import fileio, loading, runs
from polynet_tf.data.input_contract import InputContract
from polynet_tf.serving import labels


@dataclasses.dataclass
class ExportModel:
    """A model ready for `export_saved_model`.

    Attributes:
      model: the Keras model (input `contract.image_size` squared).
      contract: its `InputContract`.
      class_names: one name per class.
      model_outputs: "probabilities" or "logits".
      description: metadata entries (architecture, source).
    """

    model: keras.Model
    contract: InputContract
    class_names: List[str]
    model_outputs: str
    description: Dict


def _checkpoint_prefix(path):
    prefix, folder = runs.find_checkpoint(path)
    if prefix is None:
        raise FileNotFoundError(
            f"No checkpoint in {folder!r}; give a training model_dir, its checkpoints/ "
            "folder or a checkpoint prefix like model_dir/checkpoints/ckpt-600.")
    return prefix, folder


def _class_names(class_names_file, config, num_classes):
    if class_names_file:
        return labels.read_class_names(class_names_file), class_names_file
    if config is not None:
        for data in (config.eval_data, config.train_data):
            names = labels.class_names_beside_shards(data.file_pattern)
            if names:
                return names, f"class_index.json beside {data.file_pattern}"
    if num_classes == 1000:
        return labels.imagenet_class_names(), "imagenet"
    return labels.index_names(num_classes), "class indices"


def load_export_model(weights: Optional[str] = None, checkpoint: Optional[str] = None,
                      config_files: Sequence[str] = (), params_override: str = "",
                      architecture: Optional[str] = None, class_names_file: Optional[str] = None,
                      image_size: Optional[int] = None,
                      protocol: Optional[str] = None,
                      weights_kind: str = "auto") -> ExportModel:
    """Builds and loads the model to export.

    Args:
      weights: a `.weights.h5` file, or "imagenet".
      checkpoint: a training run's model_dir, checkpoints folder or prefix.
      config_files: experiment YAML files (later win).
      params_override: "a.b=1,c=2" applied last.
      architecture: preset name or stage spec (weights without a config).
      class_names_file: names of the classes (see `labels.read_class_names`).
      image_size: the model's input size (default: the config's eval image
        size or the preset's size).
      protocol: a single-crop protocol ("single", "squash", "shorter_side",
        "pytorchcv") instead of the config's or preset's.
      weights_kind: of a checkpoint: "auto" (its EMA when the run kept
        one), "ema" or "raw" (`polynet_tf.loading.load_model`).

    Returns:
      An `ExportModel`.

    Raises:
      ValueError: a missing or contradictory source option, or a checkpoint
        that does not fit the configured model.
      FileNotFoundError: missing files.
    """
    if bool(weights) == bool(checkpoint):
        raise ValueError("Give exactly one model source: --weights FILE|imagenet or "
                         "--checkpoint DIR.")
    common = dict(image_size=image_size, protocol=protocol, fixed_input=True)
    if checkpoint:
        prefix, folder = _checkpoint_prefix(checkpoint)
        config_files = list(config_files) or [p for p in [runs.params_beside(folder)] if p]
        if not config_files:
            raise ValueError(f"--checkpoint {checkpoint!r} needs --config (the training "
                             "configuration); no params.yaml was found beside it.")
        # Logits: the export adds the softmax.
        loaded = loading.load_model(checkpoint=prefix, config=config_files,
                                    params_override=params_override,
                                    classifier_activation=None, weights_kind=weights_kind,
                                    **common)
        outputs = "logits"
    elif config_files:
        if weights == "imagenet":
            raise ValueError("--weights imagenet takes --architecture (a preset), not --config.")
        if not fileio.isfile(weights):
            raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
        loaded = loading.load_model(weights=weights, config=list(config_files),
                                    params_override=params_override, **common)
        outputs = "probabilities"
    else:
        if weights != "imagenet" and not architecture:
            raise ValueError(f"--weights {weights!r} needs --architecture NAME or --config "
                             "YAML to build the model the weights belong to.")
        loaded = loading.load_model(weights=weights, architecture=architecture, **common)
        outputs = "probabilities"
    names, names_source = _class_names(class_names_file, loaded.config, loaded.num_classes)
    return ExportModel(loaded.model, loaded.contract, names, outputs,
                       dict(loaded.description, class_names_source=names_source))
