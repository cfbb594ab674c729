"""One road from a run (or weights) to a model: `load_model`.

A trained PolyNet comes from one of three sources:

- `weights=`: "imagenet" (a preset's published weights) or a `.weights.h5`
  file, with `architecture=` (a preset or stage spec) or `config=` (an
  experiment whose `model` section built it);
- `checkpoint=`: a training checkpoint (a run's model_dir, its
  `checkpoints/` folder or a prefix) with `config=` or the run's
  `params.yaml`;
- `run_dir=`: a training run's model directory (its latest checkpoint and
  its `params.yaml`).

`load_model` turns any of them into a `LoadedModel`: the Keras model, the
crop protocol and normalisation it expects (`polynet_tf.data.protocols`),
its number of classes and a description. The run layout is
`polynet_tf.runs`; configurations are read by
`polynet_tf.configs.experiment.load_experiment`.
"""

import dataclasses
from typing import Dict, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from polynet_tf import fileio, runs
from polynet_tf.configs.experiment import ExperimentConfig, load_experiment
from polynet_tf.data import protocols
from polynet_tf.models import PolyNet
from polynet_tf.models.architectures import get_pretrained_config, resolve_architecture
from polynet_tf.models.factory import build_model
from polynet_tf.models.pretrained_config import IMAGENET_MEAN, IMAGENET_STD


@dataclasses.dataclass
class LoadedModel:
    """A model with what is needed to feed it.

    Attributes:
        model: the Keras model.
        protocol: the single-crop `CropProtocol` it was measured with (the
            experiment's eval protocol, a preset's published protocol, or
            the one asked for).
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB standard deviation on the [0, 1] scale.
        num_classes: outputs of the classifier.
        config: the `ExperimentConfig`, None for a preset's weights.
        description: where the model came from (architecture, source).
    """

    model: keras.Model
    protocol: protocols.CropProtocol
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_classes: int
    config: Optional[ExperimentConfig]
    description: Dict[str, str]


def load_model(weights: Optional[str] = None, checkpoint: Optional[str] = None,
               run_dir: Optional[str] = None,
               config: Union[None, str, Sequence[str], ExperimentConfig] = None,
               params_override: str = "", architecture: Optional[str] = None,
               classes: Optional[int] = None, width_multiplier: Optional[float] = None,
               crop_size: Optional[int] = None, protocol: Optional[str] = None,
               fixed_input: bool = False,
               classifier_activation: Optional[str] = "softmax") -> LoadedModel:
    """Builds and loads a model from weights, a checkpoint or a run directory.

    Args:
        weights: "imagenet" or a `.weights.h5` file (URI).
        checkpoint: a training checkpoint: model_dir, checkpoints folder or prefix.
        run_dir: a training run's model directory.
        config: experiment YAML path(s) or an `ExperimentConfig`; default for
            a checkpoint: the run's `params.yaml`.
        params_override: "a.b=1,c=2" applied to YAML `config`.
        architecture: preset or stage spec of a weights file without config
            (default for "imagenet": the preset that has them).
        classes: classes of a weights file without config (default 1000);
            with "imagenet", None or the published weights' classes.
        width_multiplier: of a weights file without config.
        crop_size: the protocol's crop side (default: the config's eval image
            size, the published weights' size or the preset's size).
        protocol: a protocol name (`polynet_tf.data.protocols.PROTOCOL_NAMES`)
            instead of the config's or the preset's.
        fixed_input: a model input of `crop_size` x `crop_size` (export);
            otherwise any size.
        classifier_activation: "softmax" (probabilities) or None (logits).

    Returns:
        A `LoadedModel`.

    Raises:
        ValueError: not exactly one source, a contradictory option, or weights
            that do not fit the model (naming the first mismatch).
        FileNotFoundError: a missing file, folder or checkpoint.
    """
    if sum(bool(s) for s in (weights, checkpoint, run_dir)) != 1:
        raise ValueError("Give exactly one model source: weights=FILE|imagenet, "
                         "checkpoint=DIR|PREFIX or run_dir=DIR.")
    if run_dir:
        if not fileio.isfile(runs.params_path(run_dir)) and config is None:
            raise FileNotFoundError(f"{run_dir!r} is not a training run: it has no "
                                    f"{runs.PARAMS_FILE}.")
        checkpoint = run_dir
    if checkpoint:
        return _from_checkpoint(checkpoint, config, params_override, crop_size, protocol,
                                fixed_input, classifier_activation)
    if config is not None:
        if weights == "imagenet":
            raise ValueError("weights='imagenet' takes architecture= (a preset), not a config.")
        return _from_weights_and_config(weights, _config(config, params_override), crop_size,
                                        protocol, fixed_input, classifier_activation)
    return _from_preset_weights(weights, architecture, classes, width_multiplier, crop_size,
                                protocol, fixed_input, classifier_activation)


def config_protocol(config: ExperimentConfig, crop_size: Optional[int] = None,
                    protocol: Optional[str] = None) -> protocols.CropProtocol:
    """The single-crop protocol of an experiment's evaluation data (or `protocol` instead)."""
    data = config.eval_data
    size = int(crop_size or data.image_size)
    name = protocol or data.eval_protocol
    if protocol and protocol != data.eval_protocol:
        kept = {"crop_fraction": data.crop_fraction} if name == "single" else {}
        return protocols.get_protocol(name, crop_size=size, **kept)
    return data.eval_crop_protocol(size)


def preset_protocol(architecture: str, crop_size: Optional[int] = None,
                    protocol: Optional[str] = None) -> protocols.CropProtocol:
    """A preset's protocol: its published weights' (or `protocol`), at their size."""
    preset, _ = resolve_architecture(architecture)
    published = preset.pretrained.get("imagenet") if preset else None
    size = int(crop_size or (published.input_size if published
                             else preset.default_size if preset else 299))
    name = protocol or (published.crop_protocol if published else "single")
    return protocols.get_protocol(name, crop_size=size)


def _config(config, params_override):
    if isinstance(config, ExperimentConfig):
        return config
    files = [config] if isinstance(config, str) else list(config)
    return load_experiment(files, params_override, mode=None)


def _shape(fixed_input, size):
    return (size, size, 3) if fixed_input else (None, None, 3)


def _from_checkpoint(path, config, params_override, crop_size, protocol, fixed_input,
                     activation):
    prefix, folder = runs.find_checkpoint(path)
    if prefix is None:
        raise FileNotFoundError(f"No checkpoint in {folder!r}; give a training model_dir, "
                                "its checkpoints/ folder or a checkpoint prefix.")
    if config is None:
        config = runs.params_beside(folder)
        if config is None:
            raise FileNotFoundError(f"No {runs.PARAMS_FILE} beside checkpoint {prefix!r}; "
                                    "pass config= (the training configuration).")
    config = _config(config, params_override)
    crop = config_protocol(config, crop_size, protocol)
    model = build_model(config.model, image_size=crop.crop_size if fixed_input else None,
                        classifier_activation=activation)
    try:
        # The head's activation holds no variable: a softmax model restores too.
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ValueError(f"Checkpoint {prefix!r} does not fit the model its configuration "
                         f"builds: {str(error)[:300]}") from None
    return LoadedModel(model, crop, tuple(config.eval_data.mean), tuple(config.eval_data.std),
                       config.model.num_classes, config,
                       {"architecture": config.model.architecture,
                        "source": f"checkpoint {prefix}"})


def _from_weights_and_config(weights, config, crop_size, protocol, fixed_input, activation):
    from polynet_tf.weights.weights_file import load_weights_file  # noqa: PLC0415

    if not fileio.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
    crop = config_protocol(config, crop_size, protocol)
    model = build_model(config.model, image_size=crop.crop_size if fixed_input else None,
                        classifier_activation=activation)
    load_weights_file(model, weights)
    return LoadedModel(model, crop, tuple(config.eval_data.mean), tuple(config.eval_data.std),
                       config.model.num_classes, config,
                       {"architecture": config.model.architecture,
                        "source": f"weights {weights}"})


def _from_preset_weights(weights, architecture, classes, width_multiplier, crop_size, protocol,
                         fixed_input, activation):
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights == "imagenet":
        architecture, published = get_pretrained_config(architecture, weights)
        # A contradicting `classes` goes on to PolyNet, whose error names both numbers.
        classes = published.num_classes if classes is None else classes
        mean, std = published.mean, published.std
    elif not architecture:
        raise ValueError(f"weights={weights!r} needs architecture=NAME or config=YAML to "
                         "build the model the weights belong to.")
    elif not fileio.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
    crop = preset_protocol(architecture, crop_size, protocol)
    options = {} if width_multiplier is None else {"width_multiplier": width_multiplier}
    model = PolyNet(architecture, weights=weights, input_shape=_shape(fixed_input,
                                                                      crop.crop_size),
                    classes=classes or 1000, classifier_activation=activation, **options)
    return LoadedModel(model, crop, tuple(mean), tuple(std), int(model.output_shape[-1]), None,
                       {"architecture": architecture, "source": f"weights {weights}"})
