"""Where an evaluated model comes from, and how it turns crops into probabilities.

A model is named by a `ModelSpec` (plain data, parsed from the CLI's
`--model` text) and loaded into a `Scorer`: a callable taking raw RGB crops
(float32 `[n, size, size, 3]` in [0, 255]) and returning softmax probabilities
`[n, classes]`. Each scorer applies its own model's normalisation, so models
trained with different statistics can be evaluated together (ensembles).

Sources:

- `weights=FILE` (a `.weights.h5` file, or `imagenet` for the released
  weights) with `architecture=NAME` (normalised like `preprocess_input`) or
  `config=YAML` (the model and the eval data's mean/std of an experiment).
- `checkpoint=DIR`: a training run's `model_dir` (or its `checkpoints/`
  folder, or one checkpoint prefix); the configuration is `config=YAML` or the
  run's `params.yaml`.
- `saved_model=DIR`: an exported SavedModel. Its `serve_crops` signature
  (crops in [0, 255], used as they are) is preferred; otherwise
  `serve_images` (images in [0, 255]); either must return `probabilities`.
  polynet_tf exports have both, and their `serve_images` cuts its own
  single crop, which is why the evaluator's crops go to `serve_crops`.
"""

import dataclasses
import re
from typing import Callable, Optional

import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.data import normalization

SOURCE_KINDS = ("weights", "checkpoint", "saved_model")
SPEC_KEYS = SOURCE_KINDS + ("architecture", "config", "classes", "width_multiplier", "weight",
                            "weights_kind")
WEIGHTS_KINDS = ("auto", "ema", "raw")  # of a checkpoint: polynet_tf.loading.load_model
# Pairs are split at commas followed by `key=`, so that stage specs with
# commas ("B: (poly3[convs], 2way)*10") stay whole.
_SPEC_SPLIT = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")
SERVE_CROPS_SIGNATURE = "serve_crops"
SERVE_IMAGES_SIGNATURE = "serve_images"
# In order of preference: crops as they are, then whole images.
SAVED_MODEL_SIGNATURES = (SERVE_CROPS_SIGNATURE, SERVE_IMAGES_SIGNATURE)
PROBABILITIES_OUTPUT = "probabilities"
# Where `python -m polynet_tf.export` records the model's input contract.
EXPORT_METADATA = ("assets.extra", "polynet_export.json")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate.

    Attributes:
      kind: "weights", "checkpoint" or "saved_model".
      path: the weights file (or "imagenet"), checkpoint directory/prefix, or
        SavedModel directory.
      architecture: preset name or stage spec (kind "weights" without config;
        for `weights=imagenet` the preset that has them).
      config: experiment YAML giving the model and its normalisation.
      classes: number of classes (kind "weights" without config; default 1000).
      width_multiplier: channel multiplier (kind "weights" without config).
      weight: the model's weight in an ensemble (> 0; weights are normalised
        to sum to 1).
    """

    kind: str
    path: str
    architecture: Optional[str] = None
    config: Optional[str] = None
    classes: Optional[int] = None
    width_multiplier: Optional[float] = None
    weight: float = 1.0
    weights_kind: str = "auto"

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(
                f"Model source must be one of {list(SOURCE_KINDS)}; received {self.kind!r}.")
        if not self.path:
            raise ValueError(f"Model source {self.kind!r} needs a path.")
        if self.weights_kind not in WEIGHTS_KINDS:
            raise ValueError(f"weights_kind must be one of {list(WEIGHTS_KINDS)}; received "
                             f"{self.weights_kind!r}.")
        if not (isinstance(self.weight, (int, float)) and self.weight > 0):
            raise ValueError(f"Model weight must be a positive number; received "
                             f"{self.weight!r}.")
        if self.kind == "weights" and self.path == "imagenet" and not (
                self.architecture or self.config):
            # The preset whose published weights these are (frozen: set directly).
            from polynet_tf.models.architectures import (  # noqa: PLC0415
                get_pretrained_config,
            )

            object.__setattr__(self, "architecture", get_pretrained_config(None)[0])
        if self.kind == "weights" and not (self.architecture or self.config):
            raise ValueError(
                f"weights={self.path!r} needs architecture=NAME or config=YAML to build "
                "the model the weights belong to.")

    def describe(self) -> str:
        """Short text naming the model, for reports."""
        extra = "".join(f", {k}={v}" for k, v in (("architecture", self.architecture),
                                                 ("config", self.config)) if v)
        return f"{self.kind}={self.path}{extra}"


def parse_model_spec(text: str) -> ModelSpec:
    """Parses `--model` text: comma-separated `key=value` pairs.

    Exactly one of `weights=`, `checkpoint=`, `saved_model=`; optional
    `architecture=`, `config=`, `classes=`, `width_multiplier=`, `weight=`,
    `weights_kind=` (auto|ema|raw: a checkpoint's EMA or raw weights).
    Commas inside a value (stage specs) are kept. Examples:
    `checkpoint=runs/a,weight=0.6`, `weights=imagenet,architecture=very_deep`,
    `saved_model=export/polynet/1,weight=2`.

    Args:
      text: the spec.

    Returns:
      A `ModelSpec`.

    Raises:
      ValueError: naming the malformed or unknown part.
    """
    values = {}
    for part in (p.strip() for p in _SPEC_SPLIT.split(text)):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ValueError(
                f"Bad model spec {text!r}: {part!r} is not key=value. Example: "
                "'checkpoint=runs/a,weight=0.6'.")
        if key not in SPEC_KEYS:
            raise ValueError(
                f"Bad model spec {text!r}: unknown key {key!r}; allowed: {list(SPEC_KEYS)}.")
        if key in values:
            raise ValueError(f"Bad model spec {text!r}: {key!r} given twice.")
        values[key] = value.strip()
    kinds = [k for k in SOURCE_KINDS if k in values]
    if len(kinds) != 1:
        raise ValueError(
            f"Bad model spec {text!r}: give exactly one of weights=, checkpoint=, "
            "saved_model=.")
    try:
        weight = float(values.get("weight", 1.0))
        classes = int(values["classes"]) if "classes" in values else None
        width = float(values["width_multiplier"]) if "width_multiplier" in values else None
    except ValueError:
        raise ValueError(f"Bad model spec {text!r}: weight and width_multiplier must be "
                         "numbers, classes an integer.") from None
    return ModelSpec(kind=kinds[0], path=values[kinds[0]],
                     architecture=values.get("architecture"), config=values.get("config"),
                     classes=classes, width_multiplier=width, weight=weight,
                     weights_kind=values.get("weights_kind", "auto"))


@dataclasses.dataclass
class Scorer:
    """Raw crops -> probabilities for one model.

    Attributes:
      score: callable, float32 `[n, size, size, 3]` in [0, 255] ->
        float32 `[n, classes]` probabilities.
      num_classes: number of classes.
      description: what was loaded, for reports.
      input_size: the model's fixed input side, or None if it takes any size.
      model: the Keras model, when there is one (None for SavedModels).
      contract: the model's `InputContract` (from `polynet_tf.loading`), when
        known: the evaluator's default protocol for it.
    """

    score: Callable
    num_classes: int
    description: str
    input_size: Optional[int] = None
    model: Optional[object] = None
    contract: Optional[object] = None

    def __call__(self, crops):
        return self.score(crops)


def keras_scorer(model, mean=normalization.IMAGENET_MEAN, std=normalization.IMAGENET_STD,
                 from_logits=False, description="keras model") -> Scorer:
    """A scorer from a Keras classifier.

    Args:
      model: Keras model taking normalised images.
      mean: normalisation mean on the [0, 1] scale (`normalize_image`).
      std: normalisation standard deviation on the [0, 1] scale.
      from_logits: the model returns logits (softmax is applied here).
      description: for reports.

    Returns:
      A `Scorer`.
    """
    mean, std = tuple(mean), tuple(std)

    def score(crops):
        outputs = model(normalization.normalize_image(crops, mean, std), training=False)
        outputs = tf.cast(outputs, tf.float32)
        return tf.nn.softmax(outputs, axis=-1) if from_logits else outputs

    input_size = model.input_shape[1] if model.input_shape[1] == model.input_shape[2] else None
    return Scorer(score, int(model.output_shape[-1]), description, input_size, model)


def load_scorer(spec: ModelSpec) -> Scorer:
    """Loads the model a spec names.

    Args:
      spec: the `ModelSpec`.

    Returns:
      A `Scorer`.

    Raises:
      FileNotFoundError: for a missing file, directory or checkpoint.
      ValueError: for a SavedModel without the `serve_images` signature, or
        a checkpoint that does not fit the configured model.
    """
    if spec.kind == "saved_model":
        return _saved_model_scorer(spec)
    if spec.kind == "checkpoint":
        return _checkpoint_scorer(spec)
    return _weights_scorer(spec)


def _weights_scorer(spec):
    from polynet_tf.loading import load_model  # noqa: PLC0415

    if spec.path != "imagenet" and not fileio.isfile(spec.path):
        raise FileNotFoundError(f"Weights file {spec.path!r} does not exist.")
    loaded = load_model(weights=spec.path, config=spec.config, architecture=spec.architecture,
                        classes=spec.classes, width_multiplier=spec.width_multiplier)
    scorer = keras_scorer(loaded.model, loaded.mean, loaded.std, description=spec.describe())
    scorer.contract = loaded.contract
    return scorer


def _checkpoint_scorer(spec):
    from polynet_tf.loading import load_model  # noqa: PLC0415

    # Logits: the scorer applies the softmax in float32.
    loaded = load_model(checkpoint=spec.path, config=spec.config, classifier_activation=None,
                        weights_kind=spec.weights_kind)
    scorer = keras_scorer(loaded.model, loaded.mean, loaded.std, from_logits=True,
                          description=f"{spec.describe()} ({loaded.description['source']})")
    scorer.contract = loaded.contract
    return scorer


def _recorded_contract(saved_model_dir):
    """The `InputContract` an export recorded beside its SavedModel, or None."""
    from polynet_tf.data.input_contract import resolve_input_contract  # noqa: PLC0415

    path = fileio.join(saved_model_dir, *EXPORT_METADATA)
    if not fileio.isfile(path):
        return None
    metadata = fileio.read_json(path).get("input_contract")
    return resolve_input_contract(metadata=metadata) if metadata else None


def _saved_model_scorer(spec):
    if not tf.saved_model.contains_saved_model(spec.path):
        raise FileNotFoundError(f"No SavedModel in {spec.path!r}.")
    loaded = tf.saved_model.load(spec.path)
    name = next((n for n in SAVED_MODEL_SIGNATURES if n in loaded.signatures), None)
    if name is None:
        raise ValueError(
            f"SavedModel {spec.path!r} has no {SERVE_CROPS_SIGNATURE!r} or "
            f"{SERVE_IMAGES_SIGNATURE!r} signature (it has {sorted(loaded.signatures)}); "
            "export it with python -m polynet_tf.export.")
    signature = loaded.signatures[name]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(f"{name!r} of {spec.path!r} must take one input; it takes "
                         f"{sorted(inputs)}.")
    (input_name, input_spec), = inputs.items()
    outputs = signature.structured_outputs
    if PROBABILITIES_OUTPUT not in outputs:
        raise ValueError(f"{name!r} of {spec.path!r} returns {sorted(outputs)}, not "
                         f"{PROBABILITIES_OUTPUT!r}.")

    def score(crops):
        images = tf.cast(crops, input_spec.dtype)
        return tf.cast(signature(**{input_name: images})[PROBABILITIES_OUTPUT], tf.float32)

    shape = input_spec.shape
    input_size = shape[1] if shape.rank == 4 and shape[1] == shape[2] else None
    scorer = Scorer(score, int(outputs[PROBABILITIES_OUTPUT].shape[-1]),
                    f"{spec.describe()} (signature {name})", input_size,
                    contract=_recorded_contract(spec.path))
    scorer.loaded = loaded  # Keeps the SavedModel's variables alive.
    return scorer
