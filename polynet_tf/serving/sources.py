"""The model to export, with its preprocessing and class names.

Sources:

- a training run: `checkpoint` (its `model_dir`, `checkpoints/` folder or a
  checkpoint prefix) with the experiment configuration (`config_files`, or
  the run's `params.yaml`); the model outputs logits, softmax is added;
- a weights file with `config_files` (model and eval data of an experiment)
  or with a preset `architecture`;
- `weights="imagenet"`: the published weights of a preset (its
  `PretrainedConfig`).

Preprocessing: the experiment's `eval_data` (protocol, image size, mean and
std); for presets the released weights' protocol ("released": shorter side
to 378, centre 331 for `very_deep`) or the "single" centre crop at the preset's size,
with the ImageNet mean and std (`preprocess_input`).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import keras

from polynet_tf import fileio, loading, runs
from polynet_tf.data import normalization
from polynet_tf.evaluation import protocols
from polynet_tf.serving import labels
from polynet_tf.serving.preprocessing import ServingPreprocessing


@dataclasses.dataclass
class ExportModel:
    """A model ready for `export_saved_model`.

    Attributes:
      model: the Keras model (input `crop_size` x `crop_size`).
      preprocessing: its `ServingPreprocessing`.
      class_names: one name per class.
      model_outputs: "probabilities" or "logits".
      description: metadata entries (architecture, source).
    """

    model: keras.Model
    preprocessing: ServingPreprocessing
    class_names: List[str]
    model_outputs: str
    description: Dict


def serving_preprocessing(crop, mean, std) -> ServingPreprocessing:
    """The `ServingPreprocessing` of a single-crop `CropProtocol` and a normalisation."""
    if crop.name in protocols.RELEASED_PROTOCOLS:
        return ServingPreprocessing(crop.name, crop.crop_size, resize_size=crop.scales[0],
                                    mean=list(mean), std=list(std))
    return ServingPreprocessing(crop.name, crop.crop_size, crop_fraction=crop.crop_fraction,
                                mean=list(mean), std=list(std))


def preprocessing_from_config(config, crop_size: Optional[int] = None) -> ServingPreprocessing:
    """The evaluator's single-crop protocol equal to the experiment's eval pipeline."""
    return serving_preprocessing(loading.config_protocol(config, crop_size),
                                 config.eval_data.mean, config.eval_data.std)


def preset_preprocessing(architecture: str, crop_size: Optional[int] = None,
                         protocol: Optional[str] = None) -> ServingPreprocessing:
    """A preset's preprocessing: its published weights' protocol, else "single"."""
    return serving_preprocessing(loading.preset_protocol(architecture, crop_size, protocol),
                                 normalization.IMAGENET_MEAN, normalization.IMAGENET_STD)


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
                      crop_size: Optional[int] = None,
                      protocol: Optional[str] = None) -> ExportModel:
    """Builds and loads the model to export.

    Args:
      weights: a `.weights.h5` file, or "imagenet".
      checkpoint: a training run's model_dir, checkpoints folder or prefix.
      config_files: experiment YAML files (later win).
      params_override: "a.b=1,c=2" applied last.
      architecture: preset name or stage spec (weights without a config).
      class_names_file: names of the classes (see `labels.read_class_names`).
      crop_size: the model's input size (default: the config's eval image
        size or the preset's size).
      protocol: "single" or a released protocol ("released",
        "released_pytorchcv", "released_squash") instead of the config's or
        preset's.

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
    common = dict(crop_size=crop_size, protocol=protocol, fixed_input=True)
    if checkpoint:
        prefix, folder = _checkpoint_prefix(checkpoint)
        config_files = list(config_files) or [p for p in [runs.params_beside(folder)] if p]
        if not config_files:
            raise ValueError(f"--checkpoint {checkpoint!r} needs --config (the training "
                             "configuration); no params.yaml was found beside it.")
        # Logits: the export adds the softmax.
        loaded = loading.load_model(checkpoint=prefix, config=config_files,
                                    params_override=params_override,
                                    classifier_activation=None, **common)
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
    preprocessing = serving_preprocessing(loaded.protocol, loaded.mean, loaded.std)
    names, names_source = _class_names(class_names_file, loaded.config, loaded.num_classes)
    return ExportModel(loaded.model, preprocessing, names, outputs,
                       dict(loaded.description, class_names_source=names_source))
