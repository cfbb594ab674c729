"""Input pipeline of polynet-tf: ImageNet TFRecords or TFDS to normalised batches.

Knows nothing about models; depends on TensorFlow, and on Keras's image
preprocessing layers for augmentation only.

- `DataConfig` (`config`): every knob, as validated plain data.
- `InputContract`, `resolve_input_contract` (`input_contract`): how an image
  becomes a model's input (size, crop protocol, normalisation), one record
  for the pipeline, the evaluator, serving and keras-hub.
- `build_dataset` (`pipeline`): the tf.data pipeline of one worker.
- `Augmenter` (`augmentation`): RandAugment, random erasing, MixUp and CutMix
  (Keras's layers) drawn from the pipeline's seeds; soft targets.
- `preprocess_for_train`, `preprocess_for_eval`, `squash_center_crop` (the
  released weights' published protocol), `shorter_side_center_crop`
  (`preprocessing`): one encoded image -> float32 image.
- `normalize_image`, `IMAGENET_MEAN`, `IMAGENET_STD` (`normalization`).
- `make_example`, `parse_example`, `write_shard`, `read_class_index`,
  `write_class_index` (`example_format`): the record and class-index formats.
- `shard_files` (`sharding`): which files/records a worker reads.
- `python -m polynet_tf.data.build_tfrecords`: image folders -> shards.
"""

from polynet_tf.data.config import DataConfig
from polynet_tf.data.example_format import (
    CLASS_INDEX_FILENAME,
    ClassIndex,
    make_example,
    parse_example,
    read_class_index,
    shard_name,
    write_class_index,
    write_shard,
)
from polynet_tf.data.input_contract import InputContract, resolve_input_contract
from polynet_tf.data.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from polynet_tf.data.pipeline import PipelineStats, build_dataset
from polynet_tf.data.preprocessing import (
    center_crop_window,
    preprocess_for_eval,
    preprocess_for_train,
    sample_crop_window,
    shorter_side_center_crop,
    squash_center_crop,
)
from polynet_tf.data.sharding import ShardAssignment, shard_files

__all__ = [
    "CLASS_INDEX_FILENAME",
    "ClassIndex",
    "DataConfig",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputContract",
    "PipelineStats",
    "ShardAssignment",
    "build_dataset",
    "center_crop_window",
    "make_example",
    "normalize_image",
    "parse_example",
    "preprocess_for_eval",
    "preprocess_for_train",
    "read_class_index",
    "resolve_input_contract",
    "sample_crop_window",
    "shard_files",
    "shard_name",
    "shorter_side_center_crop",
    "squash_center_crop",
    "write_class_index",
    "write_shard",
]
