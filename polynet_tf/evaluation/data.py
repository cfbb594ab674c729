"""Evaluation data: records of TFRecord shards or a TFDS split, made into crops.

Each image is decoded once, whole, and every crop of the protocol is cut in
the `tf.data` graph (`protocols.make_crops`), so the network sees batches of
crops and no Python runs per crop. Crops stay in [0, 255]: each model of an
ensemble normalises them its own way.
"""

import dataclasses
from typing import List, Optional

import tensorflow as tf

from polynet_tf.data import example_format, sources
from polynet_tf.evaluation import protocols


@dataclasses.dataclass
class EvaluationRecords:
    """The records to evaluate and what is known about them.

    Attributes:
      dataset: `(encoded_image, label int32, name string)` per image.
      description: where they come from.
      num_images: number of records, if known (progress bar).
      class_names: label -> name, if known.
      files: the TFRecord files in order (TFRecords only).
      label_offset: what is subtracted from the stored labels (TFRecords only).
    """

    dataset: tf.data.Dataset
    description: str
    num_images: Optional[int] = None
    class_names: Optional[List[str]] = None
    files: Optional[List[str]] = None
    label_offset: Optional[int] = None


def tfrecord_records(file_pattern: str, label_offset: Optional[int] = None,
                     count: bool = True) -> EvaluationRecords:
    """Records of ImageNet-format TFRecord shards (`polynet_tf.data` format).

    Args:
      file_pattern: glob(s) of the shards, comma-separated.
      label_offset: subtracted from stored labels; None: from the
        `class_index.json` beside the shards, else 0 (TensorFlow's ImageNet
        shards store 1..1000: use 1).
      count: count the records when the class index does not list them.

    Returns:
      `EvaluationRecords`, files in sorted order.

    Raises:
      FileNotFoundError: if a glob matches no file.
    """
    files = sources.expand_file_pattern(file_pattern)
    class_index = example_format.find_class_index(files)
    if label_offset is None:
        label_offset = class_index.label_offset if class_index else 0
    known = class_index.shard_sizes if class_index else {}
    num_images = None
    if all(_basename(f) in known for f in files):
        num_images = sum(known[_basename(f)] for f in files)
    elif count:
        num_images = int(tf.data.TFRecordDataset(files).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1))
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=None).map(
        lambda record: example_format.parse_example(record, label_offset))
    return EvaluationRecords(dataset, f"{len(files)} TFRecord file(s) {file_pattern}",
                             num_images, class_index.classes if class_index else None,
                             files, label_offset)


def tfds_records(name: str, split: str = "validation", data_dir: str = "",
                 manual_dir: str = "") -> EvaluationRecords:
    """Records of a TFDS image-classification split (nothing is downloaded).

    Args:
      name: TFDS dataset name, e.g. "imagenet2012".
      split: split, slicing allowed.
      data_dir: TFDS data directory ("" = default).
      manual_dir: if set, the dataset is prepared from the files there first.

    Returns:
      `EvaluationRecords`.
    """
    from polynet_tf.data import tfds_source  # noqa: PLC0415  (optional dependency)
    from polynet_tf.data.config import DataConfig  # noqa: PLC0415

    config = DataConfig(tfds_name=name, tfds_split=split, tfds_data_dir=data_dir,
                        tfds_manual_dir=manual_dir, is_training=False)
    source = tfds_source.TfdsSource(config, None)
    dataset = source.all_records().map(
        lambda record: (*source.parse(record), record["source"]))
    names = None
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415

        feature = tfds.builder(name, data_dir=data_dir or None).info.features[
            config.tfds_label_key]
        names = list(getattr(feature, "names", None) or []) or None
    except Exception:  # Names are a nicety; the evaluation works without them.
        names = None
    return EvaluationRecords(dataset, f"TFDS {name}/{split}", source.records_per_epoch(),
                             names)


def crops_dataset(records: tf.data.Dataset, protocol: protocols.CropProtocol,
                  batch_size: int) -> tf.data.Dataset:
    """Decodes each image once and cuts all its crops.

    Args:
      records: `(encoded_image, label, name)` per image.
      protocol: the `CropProtocol`.
      batch_size: images per batch (the network sees `batch_size x
        crops_per_scale` crops at a time).

    Returns:
      Batches `(crops, labels)`: float32 `[batch, num_crops, size, size, 3]`
      in [0, 255], int32 `[batch]`; the last batch may be smaller.
    """

    def to_crops(encoded, label, name):
        del name
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return protocols.make_crops(image, protocol), label

    return (records
            .map(to_crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
            # Bounded: one image's 288 crops of 331x331 are 378 MB.
            .prefetch(2))


def _basename(path):
    return path.replace("\\", "/").rsplit("/", 1)[-1]
