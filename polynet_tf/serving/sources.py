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
import tensorflow as tf

from polynet_tf import fileio, runs
from polynet_tf.configs.experiment import load_experiment
from polynet_tf.data import normalization
from polynet_tf.data.config import RESIZING_EVAL_PROTOCOLS
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


def preprocessing_from_config(config, crop_size: Optional[int] = None) -> ServingPreprocessing:
    """The evaluator's single-crop protocol equal to the experiment's eval pipeline."""
    data = config.eval_data
    size = int(crop_size or data.image_size)
    if data.eval_protocol in RESIZING_EVAL_PROTOCOLS:  # The same names as the evaluator's.
        return ServingPreprocessing(data.eval_protocol, size, resize_size=data.resize_size,
                                    mean=list(data.mean), std=list(data.std))
    return ServingPreprocessing("single", size, crop_fraction=data.crop_fraction,
                                mean=list(data.mean), std=list(data.std))


def preset_preprocessing(architecture: str, crop_size: Optional[int] = None,
                         protocol: Optional[str] = None) -> ServingPreprocessing:
    """A preset's preprocessing: its published weights' protocol, else "single"."""
    from polynet_tf.models.architectures import resolve_architecture  # noqa: PLC0415

    preset, _ = resolve_architecture(architecture)
    default_size = preset.default_size if preset else 299
    published = preset.pretrained.get("imagenet") if preset else None
    protocol = protocol or (published.crop_protocol if published else "single")
    size = int(crop_size or default_size)
    mean, std = list(normalization.IMAGENET_MEAN), list(normalization.IMAGENET_STD)
    if protocol in protocols.RELEASED_PROTOCOLS:
        # The protocol's resize / crop ratio (378 / 331, ...) at this crop size.
        resize = protocols.get_protocol(protocol, crop_size=size).scales[0]
        return ServingPreprocessing(protocol, size, resize_size=resize, mean=mean, std=std)
    return ServingPreprocessing(protocol, size, mean=mean, std=std)


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
    from polynet_tf.models import PolyNet  # noqa: PLC0415
    from polynet_tf.models.factory import build_model  # noqa: PLC0415

    if bool(weights) == bool(checkpoint):
        raise ValueError("Give exactly one model source: --weights FILE|imagenet or "
                         "--checkpoint DIR.")
    if checkpoint:
        prefix, folder = _checkpoint_prefix(checkpoint)
        config_files = list(config_files) or [p for p in [runs.params_beside(folder)] if p]
        if not config_files:
            raise ValueError(f"--checkpoint {checkpoint!r} needs --config (the training "
                             "configuration); no params.yaml was found beside it.")
        config = load_experiment(config_files, params_override, mode=None)
        preprocessing = _with_protocol(preprocessing_from_config(config, crop_size), protocol)
        model = build_model(config.model, image_size=preprocessing.crop_size)
        try:
            tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
                .assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:
            raise ValueError(f"Checkpoint {prefix!r} does not fit the model of "
                             f"{config_files}: {str(error)[:300]}") from None
        names, names_source = _class_names(class_names_file, config, config.model.num_classes)
        return ExportModel(model, preprocessing, names, "logits", {
            "architecture": config.model.architecture, "source": f"checkpoint {prefix}",
            "class_names_source": names_source})
    if config_files:
        if weights == "imagenet":
            raise ValueError("--weights imagenet takes --architecture (a preset), not --config.")
        config = load_experiment(config_files, params_override, mode=None)
        preprocessing = _with_protocol(preprocessing_from_config(config, crop_size), protocol)
        model = build_model(config.model, image_size=preprocessing.crop_size,
                            classifier_activation="softmax")
        if not fileio.isfile(weights):
            raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
        with fileio.local_file_for_reading(weights) as local:  # h5py reads local files.
            model.load_weights(local)
        names, names_source = _class_names(class_names_file, config, config.model.num_classes)
        return ExportModel(model, preprocessing, names, "probabilities", {
            "architecture": config.model.architecture, "source": f"weights {weights}",
            "class_names_source": names_source})
    if weights == "imagenet" and not architecture:
        from polynet_tf.models.architectures import get_pretrained_config  # noqa: PLC0415

        architecture = get_pretrained_config(None, weights)[0]
    if not architecture:
        raise ValueError(f"--weights {weights!r} needs --architecture NAME or --config YAML "
                         "to build the model the weights belong to.")
    if weights != "imagenet" and not fileio.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
    preprocessing = preset_preprocessing(architecture, crop_size, protocol)
    size = preprocessing.crop_size
    if weights == "imagenet":
        model = PolyNet(architecture, weights=weights, input_shape=(size, size, 3))
    else:
        with fileio.local_file_for_reading(weights) as local:
            model = PolyNet(architecture, weights=local, input_shape=(size, size, 3))
    names, names_source = _class_names(class_names_file, None, int(model.output_shape[-1]))
    return ExportModel(model, preprocessing, names, "probabilities", {
        "architecture": architecture, "source": f"weights {weights}",
        "class_names_source": names_source})


def _with_protocol(preprocessing, protocol):
    if protocol is None or protocol == preprocessing.protocol:
        return preprocessing
    # Another protocol: its own resize / crop ratio (379 / 331 for pytorchcv's).
    return dataclasses.replace(preprocessing, protocol=protocol, resize_size=None)
