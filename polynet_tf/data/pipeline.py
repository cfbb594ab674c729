"""`build_dataset`: the tf.data input pipeline of training and evaluation.

Stages, for one input pipeline (one worker):

1. Raw records (nothing decoded) from a source (`sources.TFRecordSource` or
   `tfds_source.TfdsSource`), sharded between workers (`sharding`).
2. Training: epochs `e = 0, 1, ...`, each with its file order and shuffle drawn
   from `(seed, worker, e)`, records enumerated within the epoch. Evaluation:
   one pass (or `num_epochs`) in file order.
3. Resuming (`skip_steps`): whole epochs are skipped arithmetically and the
   rest with `Dataset.skip` on raw records, so nothing is decoded twice; record
   numbering (hence each record's augmentation) is unchanged, and the resumed
   stream equals the tail of the uninterrupted one.
4. Records are grouped in per-replica batches, and each group is parsed,
   decoded, cropped, resized, flipped and normalised inside a guard (a nested
   dataset with `ignore_errors`). The guard finds the records that failed and
   either stops with their file and record index ("fail") or reports and
   drops them ("skip"; batches are then refilled with `rebatch`). Guarding a
   whole batch at a time keeps its cost per image negligible.
5. Training with MixUp or CutMix (`augmentation`): each batch is mixed, and
   its labels become soft targets `[batch, num_classes]`. RandAugment and
   random erasing run per image in step 4.
6. Prefetch (AUTOTUNE).

Deterministic mode: the random crop and flip of a record use stateless ops
seeded by `(seed, worker, epoch, index in epoch)`, file order and shuffle are
seeded by `(seed, worker, epoch)` (TensorFlow's global seed plays no part),
and every parallel stage preserves order, so the batches are a pure function
of the seed, the files and the config. The augmentations of `augmentation`
draw from the same seeds: a record's from its own, a batch's mixing from its
first record's.
"""

import hashlib
import random
import threading
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from polynet_tf.data import augmentation, normalization, preprocessing, sharding, sources
from polynet_tf.data.config import DataConfig

_MAX_REPORTED_PROBLEMS = 1000


class PipelineStats:
    """What the "skip" policy dropped, shared by the pipelines it is given to.

    Attributes:
      skipped_records: records that could not be parsed or decoded.
      corrupt_files: files whose remaining records were lost to a corrupt or
        truncated record.
      problems: `(kind, source, record_index, detail)` of the first 1000
        problems.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.skipped_records = 0
        self.corrupt_files = 0
        self.problems: List[Tuple[str, str, int, str]] = []

    def report(self, kind: str, source: str, record_index: int, detail: str) -> None:
        """Records one problem and logs it (called from the pipeline)."""
        with self._lock:
            if kind == "corrupt_file":
                self.corrupt_files += 1
            else:
                self.skipped_records += 1
            if len(self.problems) < _MAX_REPORTED_PROBLEMS:
                self.problems.append((kind, source, record_index, detail))
        logging.warning("polynet_tf.data skipped %s: %s record %d: %s",
                        kind, source, record_index, detail)

    def as_dict(self) -> Dict[str, int]:
        """The counters, e.g. for a training log."""
        with self._lock:
            return {"skipped_records": self.skipped_records,
                    "corrupt_files": self.corrupt_files}


def derive_seed(*parts) -> int:
    """A 62-bit seed that is a pure function of `parts` (stable across runs)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def build_dataset(
    config: DataConfig,
    input_context: Optional[tf.distribute.InputContext] = None,
    *,
    skip_steps: int = 0,
    stats: Optional[PipelineStats] = None,
) -> tf.data.Dataset:
    """Builds the input pipeline of one worker.

    Use directly, or as the dataset function of
    `strategy.distribute_datasets_from_function(lambda ctx: build_dataset(cfg, ctx))`.

    Args:
      config: the `DataConfig` (validated here).
      input_context: given by `distribute_datasets_from_function`; selects this
        worker's part of the data (see `sharding`) and the per-replica batch.
      skip_steps: training steps already taken (when resuming). Each pipeline
        skips the records it delivered for those steps: steps x per-replica
        batch x replicas it feeds.
      stats: counters that the "skip" policy updates; a fresh one when None
        (skipped records are logged either way).

    Returns:
      A dataset of `(images, labels)`: float32 `[batch, size, size, 3]`
      normalised like `preprocess_input`, int32 `[batch]` (float32 soft
      targets `[batch, num_classes]` when `config.mixes_labels`); batches of
      `global_batch_size / num_replicas_in_sync`.

    Raises:
      ValueError: for an invalid config or `skip_steps`.
      FileNotFoundError: if `file_pattern` matches nothing.
    """
    config.validate()
    if isinstance(skip_steps, bool) or not isinstance(skip_steps, int) or skip_steps < 0:
        raise ValueError(f"skip_steps must be a non-negative integer; received {skip_steps!r}.")
    stats = stats if stats is not None else PipelineStats()
    batch_size = sharding.per_replica_batch_size(config.global_batch_size, input_context)
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    seed = config.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**62)
        logging.info("polynet_tf.data: no DataConfig.seed given; drew seed=%d", seed)

    source = _make_source(config, input_context, stats)
    skip_records = skip_steps * batch_size * sharding.replicas_per_pipeline(input_context)
    if config.is_training:
        records = _training_records(config, source, seed, pipeline_id, skip_records)
    else:
        records = _evaluation_records(config, source, skip_records)

    augmentation_seed = derive_seed(seed, pipeline_id, "augmentation")
    decode = _BatchDecoder(config, source, augmentation_seed, batch_size, stats)
    dataset = records.batch(batch_size, drop_remainder=config.should_drop_remainder)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=config.deterministic or not config.is_training)
    if config.on_error == "skip":
        # Dropped records leave short batches; refill them to the batch size.
        dataset = dataset.rebatch(batch_size, drop_remainder=config.should_drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(config))


def _make_source(config, input_context, stats):
    if config.file_pattern:
        return sources.TFRecordSource(config, input_context, stats.report)
    from polynet_tf.data import tfds_source  # Optional dependency.  # noqa: PLC0415
    return tfds_source.TfdsSource(config, input_context)


def _options(config: DataConfig) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = config.deterministic or not config.is_training
    # We shard ourselves (sharding.shard_files); auto-sharding would shard again.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    if config.private_threadpool_size:
        options.threading.private_threadpool_size = config.private_threadpool_size
    return options


def _training_records(config, source, seed, pipeline_id, skip_records):
    """Shuffled raw records, epoch after epoch, each tagged (epoch, index)."""
    file_order_seed = derive_seed(seed, pipeline_id, "file_order")
    shuffle_seed = derive_seed(seed, pipeline_id, "shuffle")
    cached = source.all_records().cache() if config.cache else None

    def one_epoch(epoch):
        # Traced in its own function graph: clearing that graph's seed keeps
        # TensorFlow's global seed (tf.random.set_seed) out of the shuffle, so
        # the order depends on DataConfig.seed alone.
        tf.compat.v1.get_default_graph().seed = None
        if cached is not None:
            records = cached
        else:
            records = source.epoch_records(epoch, file_order_seed)
        records = records.shuffle(config.shuffle_buffer_size,
                                  seed=shuffle_seed + epoch,
                                  reshuffle_each_iteration=False)
        return _number(records, epoch)

    start_epoch, skip_in_epoch = 0, skip_records
    if skip_records:
        per_epoch = source.records_per_epoch()
        if per_epoch == 0:
            raise ValueError(f"The data source has no records ({source.description}).")
        start_epoch, skip_in_epoch = divmod(skip_records, per_epoch)
    end_epoch = config.num_epochs if config.num_epochs is not None else 2**62
    epochs = tf.data.Dataset.range(start_epoch, max(start_epoch, end_epoch))
    return epochs.flat_map(one_epoch).skip(skip_in_epoch)


def _evaluation_records(config, source, skip_records):
    records = source.all_records(deterministic=True)
    if config.cache:
        records = records.cache()
    if config.num_epochs and config.num_epochs > 1:
        records = records.repeat(config.num_epochs)
    records = _number(records, tf.constant(0, tf.int64))
    return records.skip(skip_records)


def _number(records: tf.data.Dataset, epoch: tf.Tensor) -> tf.data.Dataset:
    """`(record, index in epoch, epoch)` elements, with no per-record function."""
    return tf.data.Dataset.zip(records, tf.data.Dataset.range(2**62),
                               tf.data.Dataset.from_tensors(epoch).repeat())


class _BatchDecoder:
    """Turns a group of raw records into (images, labels), guarding errors."""

    def __init__(self, config: DataConfig, source, augmentation_seed: int,
                 batch_size: int, stats: PipelineStats):
        self._config = config
        self._source = source
        self._augmentation_seed = augmentation_seed
        self._batch_size = batch_size
        self._stats = stats
        self._num_classes = getattr(source, "num_classes", None)
        self._contract = None if config.is_training else config.input_contract()
        self._augmenter = None
        if config.is_training:
            self._augmenter = augmentation.Augmenter(
                config, self._num_classes or config.num_classes)

    def _record_seed(self, index, epoch):
        key = tf.stack([tf.constant(self._augmentation_seed, tf.int64), epoch])
        return tf.random.experimental.stateless_fold_in(key, index)

    def _preprocess(self, record, index, epoch):
        config = self._config
        encoded, label = self._source.parse(record)
        if config.is_training:
            seed = self._record_seed(index, epoch)
            image = preprocessing.preprocess_for_train(
                encoded, config.image_size, seed,
                area_range=config.area_range,
                aspect_ratio_range=config.aspect_ratio_range,
                max_attempts=config.max_attempts,
                random_flip=config.random_flip,
                normalize=False)
            image = self._augmenter.augment_image(image, seed)
            image = normalization.normalize_image(image, config.mean, config.std)
        else:
            image = self._contract.preprocess(encoded)
        return image, label

    def __call__(self, records, indices, epochs):
        size = self._config.image_size
        count = tf.shape(records["payload"])[0]
        positions = tf.range(count)

        def guarded(record, index, epoch, position):
            image, label = self._preprocess(record, index, epoch)
            return image, label, position

        decoded = (tf.data.Dataset.from_tensor_slices((records, indices, epochs, positions))
                   .map(guarded)
                   .ignore_errors(log_warning=True)
                   .batch(self._batch_size))
        # An all-failed group yields no batch: fall back to an empty one.
        empty = tf.data.Dataset.from_tensors((
            tf.zeros([0, size, size, 3], tf.float32),
            tf.zeros([0], tf.int32),
            tf.zeros([0], tf.int32)))
        images, labels, kept = decoded.concatenate(empty).take(1).get_single_element()

        kept_mask = tf.scatter_nd(kept[:, None], tf.ones_like(kept), [count])
        failed = tf.where(tf.equal(kept_mask, 0))[:, 0]
        checks = [self._on_failed(tf.gather(records["source"], failed),
                                  tf.gather(records["record_index"], failed))]
        if self._num_classes:
            checks.append(self._check_labels(labels, tf.gather(records["source"], kept),
                                             tf.gather(records["record_index"], kept)))
        # Both outputs wait for the checks: a shape check that ran first would
        # report a short batch instead of the record that made it short.
        with tf.control_dependencies(checks):
            images, labels = tf.identity(images), tf.identity(labels)
        if self._config.on_error == "fail" and self._config.should_drop_remainder:
            images = tf.ensure_shape(images, [self._batch_size, size, size, 3])
            labels = tf.ensure_shape(labels, [self._batch_size])
        if self._config.mixes_labels:
            # A batch's mixing is drawn from its first record's seed.
            images, labels = self._augmenter.mix_batch(
                images, labels, self._record_seed(indices[0], epochs[0]))
        return images, labels

    def _on_failed(self, failed_sources, failed_indices):
        where = tf.strings.reduce_join(
            tf.strings.join(["file ", failed_sources, " record ",
                             tf.strings.as_string(failed_indices)]),
            separator="; ")
        what = "could not be parsed, or its image could not be decoded"
        if self._config.on_error == "fail":
            return tf.debugging.Assert(tf.equal(tf.size(failed_indices), 0), [
                tf.strings.join([
                    "polynet_tf.data: ", where, ": ", what, ". Set "
                    "DataConfig.on_error=skip to skip such records, or rebuild "
                    "the shards with polynet_tf.data.build_tfrecords, which "
                    "re-encodes or skips unreadable images."])])
        return tf.cond(
            tf.size(failed_indices) > 0,
            lambda: sources.report_skip("bad_record", failed_sources, failed_indices,
                                        tf.constant(what), self._stats.report),
            lambda: tf.constant(0, tf.int64))

    def _check_labels(self, labels, kept_sources, kept_indices):
        bad = tf.logical_or(labels < 0, labels >= self._num_classes)

        def fail():
            first = tf.argmax(tf.cast(bad, tf.int32))
            message = tf.strings.join([
                "polynet_tf.data: label ", tf.strings.as_string(labels[first]),
                " (after subtracting label_offset) of file ", kept_sources[first],
                " record ", tf.strings.as_string(kept_indices[first]),
                f" is outside [0, {self._num_classes}). Shards written by "
                "TensorFlow's ImageNet tools store labels 1..1000: set "
                "DataConfig.label_offset=1 for them; otherwise check "
                "DataConfig.num_classes."])
            with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
                return tf.constant(False)

        return tf.cond(tf.reduce_any(bad), fail, lambda: tf.constant(True))
