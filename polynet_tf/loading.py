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
`InputContract` it expects (`polynet_tf.data.input_contract`: input size, crop
protocol, normalisation, resolved once by `resolve_input_contract` from the
explicit options, the run's evaluation data or the preset's published
weights), its number of classes and a description. The run layout is
`polynet_tf.runs`; configurations are read by
`polynet_tf.configs.experiment.load_experiment`.
"""

import dataclasses
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from polynet_tf import fileio, runs
from polynet_tf.configs.experiment import ExperimentConfig, load_experiment
from polynet_tf.data import protocols
from polynet_tf.data.input_contract import InputContract, resolve_input_contract
from polynet_tf.models import PolyNet
from polynet_tf.models.architectures import get_pretrained_config, input_contract
from polynet_tf.models.factory import build_model


@dataclasses.dataclass
class LoadedModel:
    """A model with what is needed to feed it.

    Attributes:
        model: the Keras model.
        contract: the `InputContract` it expects (the experiment's
            evaluation data, a preset's published weights', or the options
            asked for).
        num_classes: outputs of the classifier.
        config: the `ExperimentConfig`, None for a preset's weights.
        description: where the model came from (architecture, source).
    """

    model: keras.Model
    contract: InputContract
    num_classes: int
    config: Optional[ExperimentConfig]
    description: Dict[str, str]

    @property
    def protocol(self) -> protocols.CropProtocol:
        """The contract's one-crop `CropProtocol`."""
        return self.contract.crop_protocol()

    @property
    def mean(self) -> Tuple[float, float, float]:
        return self.contract.mean

    @property
    def std(self) -> Tuple[float, float, float]:
        return self.contract.std


def load_model(weights: Optional[str] = None, checkpoint: Optional[str] = None,
               run_dir: Optional[str] = None,
               config: Union[None, str, Sequence[str], ExperimentConfig] = None,
               params_override: str = "", architecture: Optional[str] = None,
               classes: Optional[int] = None, width_multiplier: Optional[float] = None,
               image_size: Optional[int] = None, protocol: Optional[str] = None,
               fixed_input: bool = False,
               classifier_activation: Optional[str] = "softmax",
               crop_size: Optional[int] = None, weights_kind: str = "auto") -> LoadedModel:
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
        image_size: the model's input size (default: the config's eval image
            size, the published weights' size or the preset's size).
        protocol: a single-crop protocol name
            (`polynet_tf.data.protocols.SINGLE_CROP_PROTOCOLS`) instead of
            the config's or the preset's.
        fixed_input: a model input of `image_size` x `image_size` (export);
            otherwise any size.
        classifier_activation: "softmax" (probabilities) or None (logits).
        crop_size: deprecated name of `image_size`.
        weights_kind: of a checkpoint whose run kept an EMA of its weights
            (`trainer.ema_decay`): "auto" or "ema" load the averages, "raw"
            the trained weights themselves; "ema" of a run without EMA is
            an error.

    Returns:
        A `LoadedModel`.

    Raises:
        ValueError: not exactly one source, a contradictory option, or weights
            that do not fit the model (naming the first mismatch).
        FileNotFoundError: a missing file, folder or checkpoint.
    """
    if crop_size is not None:
        warnings.warn("load_model(crop_size=...) is deprecated: use image_size=.",
                      DeprecationWarning, stacklevel=2)
        image_size = image_size or crop_size
    if sum(bool(s) for s in (weights, checkpoint, run_dir)) != 1:
        raise ValueError("Give exactly one model source: weights=FILE|imagenet, "
                         "checkpoint=DIR|PREFIX or run_dir=DIR.")
    if run_dir:
        if not fileio.isfile(runs.params_path(run_dir)) and config is None:
            raise FileNotFoundError(f"{run_dir!r} is not a training run: it has no "
                                    f"{runs.PARAMS_FILE}.")
        checkpoint = run_dir
    if checkpoint:
        return _from_checkpoint(checkpoint, config, params_override, image_size, protocol,
                                fixed_input, classifier_activation, weights_kind)
    if config is not None:
        if weights == "imagenet":
            raise ValueError("weights='imagenet' takes architecture= (a preset), not a config.")
        return _from_weights_and_config(weights, _config(config, params_override), image_size,
                                        protocol, fixed_input, classifier_activation)
    return _from_preset_weights(weights, architecture, classes, width_multiplier, image_size,
                                protocol, fixed_input, classifier_activation)


def config_contract(config: ExperimentConfig, image_size: Optional[int] = None,
                    protocol: Optional[str] = None) -> InputContract:
    """The `InputContract` of an experiment's evaluation data (options win)."""
    return resolve_input_contract(data_config=config.eval_data, image_size=image_size,
                                  protocol=protocol)


def preset_contract(architecture: str, image_size: Optional[int] = None,
                    protocol: Optional[str] = None) -> InputContract:
    """A preset's `InputContract`: its published weights' (options win).

    A preset without published weights: "single" at its default size.
    """
    return input_contract(architecture, image_size=image_size, protocol=protocol)


def _config(config, params_override):
    if isinstance(config, ExperimentConfig):
        return config
    files = [config] if isinstance(config, str) else list(config)
    return load_experiment(files, params_override, mode=None)


def _shape(fixed_input, size):
    return (size, size, 3) if fixed_input else (None, None, 3)


def _from_checkpoint(path, config, params_override, image_size, protocol, fixed_input,
                     activation, weights_kind="auto"):
    if weights_kind not in ("auto", "ema", "raw"):
        raise ValueError(f"weights_kind must be 'auto', 'ema' or 'raw', got {weights_kind!r}.")
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
    contract = config_contract(config, image_size, protocol)
    model = build_model(config.model, image_size=contract.image_size if fixed_input else None,
                        classifier_activation=activation)
    try:
        # The head's activation holds no variable: a softmax model restores too.
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ValueError(f"Checkpoint {prefix!r} does not fit the model its configuration "
                         f"builds: {str(error)[:300]}") from None
    averaged = weights_kind != "raw" and runs.restore_averages(model, prefix) > 0
    if weights_kind == "ema" and not averaged:
        raise ValueError(f"Checkpoint {prefix!r} holds no EMA of its weights (its run had "
                         "trainer.ema_decay 0); load its raw weights instead.")
    return LoadedModel(model, contract, config.model.num_classes, config,
                       {"architecture": config.model.architecture,
                        "source": f"checkpoint {prefix}",
                        "weights_kind": "ema" if averaged else "raw"})


def _from_weights_and_config(weights, config, image_size, protocol, fixed_input, activation):
    from polynet_tf.weights.weights_file import load_weights_file  # noqa: PLC0415

    if not fileio.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
    contract = config_contract(config, image_size, protocol)
    model = build_model(config.model, image_size=contract.image_size if fixed_input else None,
                        classifier_activation=activation)
    load_weights_file(model, weights)
    return LoadedModel(model, contract, config.model.num_classes, config,
                       {"architecture": config.model.architecture,
                        "source": f"weights {weights}"})


def _from_preset_weights(weights, architecture, classes, width_multiplier, image_size, protocol,
                         fixed_input, activation):
    if weights == "imagenet":
        architecture, published = get_pretrained_config(architecture, weights)
        # A contradicting `classes` goes on to PolyNet, whose error names both numbers.
        classes = published.num_classes if classes is None else classes
    elif not architecture:
        raise ValueError(f"weights={weights!r} needs architecture=NAME or config=YAML to "
                         "build the model the weights belong to.")
    elif not fileio.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights!r} does not exist.")
    contract = preset_contract(architecture, image_size, protocol)
    options = {} if width_multiplier is None else {"width_multiplier": width_multiplier}
    model = PolyNet(architecture, weights=weights, input_shape=_shape(fixed_input,
                                                                      contract.image_size),
                    classes=classes or 1000, classifier_activation=activation, **options)
    return LoadedModel(model, contract, int(model.output_shape[-1]), None,
                       {"architecture": architecture, "source": f"weights {weights}"})
