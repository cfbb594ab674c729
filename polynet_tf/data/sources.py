"""Record sources: where the pipeline's raw records come from.

A source yields raw records (nothing decoded) as dicts with

- `source`: string, the file the record came from (for error messages);
- `record_index`: int64, the record's position in that file (TFRecord) or in
  this pipeline's part of the split (TFDS);
- `payload`: string, the serialized `tf.train.Example` (TFRecord) or the
  encoded image (TFDS);
- `label`: int64, TFDS only (TFRecord labels are inside the payload).

and knows how to turn one record into `(encoded_image, label)` (`parse`),
which the pipeline runs inside its error guard. Two sources exist:
`TFRecordSource` (ImageNet-format shards) and `TfdsSource`
(`polynet_tf.data.tfds_source`).
"""

import os
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf

from polynet_tf.data import example_format, sharding
from polynet_tf.data.config import DataConfig

# TFRecord framing around each record: length (8) + its CRC (4) + data CRC (4).
_TFRECORD_OVERHEAD_BYTES = 16
_READ_BUFFER_BYTES = 8 * 1024 * 1024
# Records per block of the integrity check (`_read_file`).
_CHECK_BLOCK_RECORDS = 32

# Called (through tf.py_function) with (kind, source, record_index, detail)
# for every problem a skip policy passes over.
SkipReporter = Callable[[str, str, int, str], None]


def expand_file_pattern(file_pattern: str) -> List[str]:
    """Sorted files matching comma-separated globs, without temporary files.

    Args:
      file_pattern: one glob, or several joined with commas.

    Returns:
      Sorted, de-duplicated file paths.

    Raises:
      FileNotFoundError: if a glob matches no shard.
    """
    files = set()
    for pattern in (p.strip() for p in file_pattern.split(",")):
        if not pattern:
            continue
        matched = [
            path for path in tf.io.gfile.glob(pattern)
            # Hidden files are shards still being written (temporary names).
            if not os.path.basename(path).startswith(".")
            and os.path.basename(path) != example_format.CLASS_INDEX_FILENAME
            and not tf.io.gfile.isdir(path)
        ]
        if not matched:
            raise FileNotFoundError(
                f"DataConfig.file_pattern glob {pattern!r} matched no TFRecord "
                "file; check the path (build_tfrecords names shards like "
                "'train-00000-of-00004')."
            )
        files.update(matched)
    return sorted(files)


class TFRecordSource:
    """Reads ImageNet-format TFRecord shards for one input pipeline.

    Corrupt or truncated files are detected by comparing the bytes read with
    the file size (plain TFRecord files); a TFRecord reader cannot resync
    after a corrupt record, so the rest of such a file is lost. A compressed
    (GZIP/ZLIB) file's decompressed size is unknown: when the reader stops,
    the file is read once more to the end, outside the pipeline, to learn
    whether it stopped at the end or at a bad record (once per file and
    process: it costs a second read of each compressed file in the first
    epoch). The "fail" policy stops with the file name and the index of the
    first unreadable record; "skip" reports it and goes on with the next file.
    """

    def __init__(self, config: DataConfig,
                 input_context: Optional[tf.distribute.InputContext],
                 skip_reporter: Optional[SkipReporter]):
        self._config = config
        self._skip_reporter = skip_reporter
        all_files = expand_file_pattern(config.file_pattern)
        self.assignment = sharding.shard_files(all_files, input_context)
        self.class_index = example_format.find_class_index(all_files)
        if config.label_offset is not None:
            self.label_offset = config.label_offset
        elif self.class_index is not None:
            self.label_offset = self.class_index.label_offset
        else:
            self.label_offset = 0
        self.num_classes = config.num_classes or (
            len(self.class_index.classes) if self.class_index else None)
        files = self.assignment.files
        self._check_integrity = config.compression_type == ""
        sizes = [tf.io.gfile.stat(f).length if self._check_integrity else -1 for f in files]
        self._files = tf.constant(files, dtype=tf.string)
        self._sizes = tf.constant(sizes, dtype=tf.int64)
        self._num_files = len(files)

    @property
    def description(self) -> str:
        a = self.assignment
        return (f"{self._num_files} TFRecord file(s), {a.mode} sharding "
                f"(record shard {a.record_shard_index} of {a.num_record_shards})")

    def parse(self, record):
        """Returns `(encoded_image, label int32)` of one raw record."""
        encoded, label, _ = example_format.parse_example(record["payload"], self.label_offset)
        return encoded, label

    def records_per_epoch(self) -> int:
        """Records this pipeline reads per epoch (counts files if not indexed)."""
        known = self.class_index.shard_sizes if self.class_index else {}
        total = 0
        for path in self.assignment.files:
            count = known.get(os.path.basename(path))
            if count is None:
                count = int(tf.data.TFRecordDataset(
                    path, compression_type=self._config.compression_type
                ).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
            total += sharding.records_in_shard(count, self.assignment)
        return total

    def all_records(self, deterministic: bool = True) -> tf.data.Dataset:
        """Every record of this pipeline, files in sorted order."""
        files = tf.data.Dataset.from_tensor_slices((self._files, self._sizes))
        return self._interleave(files, deterministic)

    def epoch_records(self, epoch: tf.Tensor, file_order_seed: int) -> tf.data.Dataset:
        """Records of one epoch, files in an order drawn from (seed, epoch)."""
        keys = tf.random.stateless_uniform(
            [self._num_files], seed=tf.stack([tf.constant(file_order_seed, tf.int64), epoch]))
        order = tf.argsort(keys)
        files = tf.data.Dataset.from_tensor_slices(
            (tf.gather(self._files, order), tf.gather(self._sizes, order)))
        return self._interleave(files, self._config.deterministic)

    def _interleave(self, files: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
        return files.interleave(
            self._read_file,
            cycle_length=min(self._config.cycle_length, self._num_files),
            block_length=self._config.block_length,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )

    def _read_file(self, path: tf.Tensor, size: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(
            path, compression_type=self._config.compression_type,
            buffer_size=_READ_BUFFER_BYTES)
        count = self.assignment.num_record_shards
        shard_index = self.assignment.record_shard_index

        # ignore_errors ends a file at its first framing error (the reader cannot
        # resync); an end marker then finds fewer bytes read than the file has.
        # The byte count runs over blocks of records: a function call per record
        # cost about as much as reading a 100 KiB record (docs/benchmarks.md).
        # `batch` never emits an empty block: the empty one is the end marker.
        blocks = records.ignore_errors(log_warning=True).batch(_CHECK_BLOCK_RECORDS)
        end_marker = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))

        def check(state, payloads):
            consumed, num_records = state
            read = tf.size(payloads, out_type=tf.int64)
            is_end = tf.equal(read, 0)
            lengths = tf.cast(tf.strings.length(payloads), tf.int64)
            consumed += tf.reduce_sum(lengths) + _TFRECORD_OVERHEAD_BYTES * read
            indices = num_records + tf.range(read)
            num_records += read
            if self._check_integrity:
                intact = tf.logical_or(tf.logical_not(is_end), tf.equal(consumed, size))
            else:
                intact = tf.cond(is_end, lambda: self._compressed_file_is_intact(path),
                                 lambda: tf.constant(True))
            # At the end marker, `num_records` is the index of the first unread record.
            checked = self._on_corrupt_file(intact, path, num_records, consumed, size)
            with tf.control_dependencies([checked]):
                indices = tf.identity(indices)
            if count > 1:
                in_shard = tf.equal(indices % count, shard_index)
                indices = tf.boolean_mask(indices, in_shard)
                payloads = tf.boolean_mask(payloads, in_shard)
            return (consumed, num_records), {
                "source": tf.fill(tf.shape(payloads), path), "record_index": indices,
                "payload": payloads}

        return (blocks.concatenate(end_marker)
                .scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), check)
                .unbatch())

    def _compressed_file_is_intact(self, path):
        compression = self._config.compression_type
        verdicts = self._verdicts = getattr(self, "_verdicts", {})

        def check(path_value):
            name = path_value.numpy().decode("utf-8")
            if name not in verdicts:
                try:
                    for _ in tf.data.TFRecordDataset(name, compression_type=compression):
                        pass
                    verdicts[name] = True
                except tf.errors.DataLossError:
                    verdicts[name] = False
            return verdicts[name]

        intact = tf.py_function(check, [path], Tout=tf.bool)
        intact.set_shape([])
        return intact

    def _on_corrupt_file(self, intact, path, num_records, consumed, size):
        """Fails or reports when `intact` is False; the message is only built then."""

        def message():
            if not self._check_integrity:  # compressed: no byte count to compare
                return tf.strings.join([
                    "polynet_tf.data: ", self._config.compression_type, " TFRecord file ",
                    path, " is corrupt or truncated at record ",
                    tf.strings.as_string(num_records),
                    " (the reader cannot continue past a bad record)."])
            return tf.strings.join([
                "polynet_tf.data: TFRecord file ", path, " is corrupt or truncated at "
                "record ", tf.strings.as_string(num_records), " (read ",
                tf.strings.as_string(consumed), " of ", tf.strings.as_string(size),
                " bytes; the reader cannot continue past a bad record)."])

        def fail():
            text = tf.strings.join([
                message(), " Set DataConfig.on_error=skip to skip the rest of the "
                "file, or rewrite the shard."])
            with tf.control_dependencies([tf.debugging.Assert(False, [text])]):
                return tf.constant(0, tf.int64)

        def skip():
            return report_skip("corrupt_file", path, num_records, message(),
                               self._skip_reporter)

        return tf.cond(intact, lambda: tf.constant(0, tf.int64),
                       fail if self._config.on_error == "fail" else skip)


def report_skip(kind: str, sources, record_indices, detail,
                reporter: Optional[SkipReporter]) -> tf.Tensor:
    """Calls `reporter(kind, source, record_index, detail)` from the graph.

    Args:
      kind: "corrupt_file" or "bad_record".
      sources: string tensor, scalar or vector, the files.
      record_indices: int64 tensor of the same shape, the record positions.
      detail: scalar string tensor, what went wrong.
      reporter: the Python callback (None: nothing is called).

    Returns:
      int64 scalar, the number of problems reported.
    """

    def call(source_values, index_values, detail_value):
        sources_list = np.atleast_1d(source_values.numpy())
        indices_list = np.atleast_1d(index_values.numpy())
        text = detail_value.numpy().decode("utf-8", "replace")
        if reporter is not None:
            for source, index in zip(sources_list, indices_list):
                reporter(kind, source.decode("utf-8", "replace"), int(index), text)
        return np.int64(len(sources_list))

    result = tf.py_function(call, [sources, record_indices, detail], Tout=tf.int64)
    result.set_shape([])
    return result
