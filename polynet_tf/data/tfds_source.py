"""TFDS image-classification datasets as a record source.

Any TFDS dataset with an image feature and a `ClassLabel` (or integer) label
works, e.g. `imagenet2012` (prepared once from its manual download directory:
set `DataConfig.tfds_manual_dir` to the folder holding `ILSVRC2012_img_train.tar`
and `ILSVRC2012_img_val.tar`), `cifar10`, `oxford_flowers102`. Images are read
still encoded (`tfds.decode.SkipDecoding`) and go through exactly the same
preprocessing as TFRecord shards, so JPEG datasets get the fused
decode-and-crop.

Sharding between workers uses `tfds.even_splits`, which splits by record
(disjoint and complete for any number of TFDS files); TFDS's own file-level
`input_context` sharding would fail with fewer files than workers.

Nothing is downloaded: `download_and_prepare` is only called when
`tfds_manual_dir` is set, and then only reads that folder.
"""

from typing import Optional

import tensorflow as tf

from polynet_tf.data.config import DataConfig


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "DataConfig.tfds_name needs tensorflow-datasets: "
            "pip install 'polynet-tf[tfds]'."
        ) from None
    return tfds


class TfdsSource:
    """Reads one worker's part of a TFDS split, images still encoded."""

    def __init__(self, config: DataConfig,
                 input_context: Optional[tf.distribute.InputContext]):
        tfds = _import_tfds()
        self._config = config
        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir or None)
        if config.tfds_manual_dir:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=config.tfds_manual_dir))
        features = builder.info.features
        for key in (config.tfds_image_key, config.tfds_label_key):
            if key not in features:
                raise ValueError(
                    f"TFDS dataset {config.tfds_name!r} has no feature {key!r} "
                    f"(it has {sorted(features.keys())}); set "
                    "DataConfig.tfds_image_key / tfds_label_key."
                )
        label_feature = features[config.tfds_label_key]
        self.num_classes = config.num_classes or getattr(label_feature, "num_classes", None)
        self.label_offset = config.label_offset or 0
        self._has_filename = config.tfds_filename_key in features

        split = config.tfds_split
        total = builder.info.splits[split].num_examples
        count, index = 1, 0
        if input_context is not None and input_context.num_input_pipelines > 1:
            count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            split = tfds.even_splits(config.tfds_split, count)[index]
        # even_splits gives the first (total % count) parts one extra record.
        self._num_records = total // count + (1 if index < total % count else 0)
        self._name = f"{config.tfds_name}/{config.tfds_split}"
        self.description = (f"TFDS {self._name}, part {index} of {count} "
                            f"({self._num_records} records)")
        read_config = tfds.ReadConfig(
            shuffle_seed=None,
            interleave_cycle_length=config.cycle_length,
            try_autocache=False,
        )
        self._dataset = builder.as_dataset(
            split=split,
            shuffle_files=False,  # The pipeline shuffles, seeded per epoch.
            decoders={config.tfds_image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )

    def parse(self, record):
        """Returns `(encoded_image, label int32)` of one record."""
        return record["payload"], tf.cast(record["label"] - self.label_offset, tf.int32)

    def records_per_epoch(self) -> int:
        """Records of this worker's part of the split."""
        return self._num_records

    def all_records(self, deterministic: bool = True) -> tf.data.Dataset:
        """This worker's records in TFDS order, as pipeline record dicts."""
        del deterministic  # TFDS order is fixed (shuffle_files=False).
        config = self._config

        def to_record(index, example):
            source = (example[config.tfds_filename_key] if self._has_filename
                      else tf.constant(self._name))
            return {
                "source": source,
                "record_index": index,
                "payload": example[config.tfds_image_key],
                "label": tf.cast(example[config.tfds_label_key], tf.int64),
            }

        return self._dataset.enumerate().map(to_record)

    def epoch_records(self, epoch: tf.Tensor, file_order_seed: int) -> tf.data.Dataset:
        """Records of one epoch (the pipeline shuffles them)."""
        del epoch, file_order_seed  # TFDS shards are shuffled when prepared.
        return self.all_records()
