"""Evaluation of PolyNets: single-crop and multi-crop protocols, ensembles.

- `CropProtocol`, `get_protocol`, `make_crops`, `pool_scores` (`protocols`):
  the crop sets as data (single, released, googlenet144, polynet_multicrop),
  the crops as a TensorFlow graph, top-k pooling.
- `Evaluator` (`evaluator`): crops through one model or a weighted ensemble
  under a `tf.distribute` strategy; top-1/top-5 and per-class accuracy.
- `ModelSpec`, `parse_model_spec`, `load_scorer`, `keras_scorer`
  (`model_sources`): weights files, training checkpoints, SavedModels.
- `tfrecord_records`, `tfds_records`, `crops_dataset` (`data`).
- `distributed`: one evaluation split over several tasks by file, merged by
  task 0, resumable; `continuous`: each new checkpoint of a training run,
  evaluated once (the side-car evaluator).
- `python -m polynet_tf.evaluate`: the command line.
"""

from polynet_tf.evaluation.data import crops_dataset, tfds_records, tfrecord_records
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.model_sources import (
    ModelSpec,
    Scorer,
    keras_scorer,
    load_scorer,
    parse_model_spec,
)
from polynet_tf.evaluation.protocols import (
    PROTOCOL_NAMES,
    CropLayout,
    CropProtocol,
    get_protocol,
    make_crops,
    make_scale_crops,
    pool_scores,
)

__all__ = [
    "PROTOCOL_NAMES",
    "CropLayout",
    "CropProtocol",
    "Evaluator",
    "ModelSpec",
    "Scorer",
    "crops_dataset",
    "get_protocol",
    "keras_scorer",
    "load_scorer",
    "make_crops",
    "make_scale_crops",
    "parse_model_spec",
    "pool_scores",
    "tfds_records",
    "tfrecord_records",
]
