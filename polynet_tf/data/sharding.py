"""Splitting the input between the input pipelines of a multi-worker job.

`distribute_datasets_from_function` calls the dataset function once per input
pipeline (normally once per worker) with a `tf.distribute.InputContext`; each
pipeline must read a disjoint part of the data, and together they must read all
of it. Two ways, chosen by `shard_files`:

- FILE sharding (`num_files >= num_input_pipelines`): pipeline `i` reads files
  `i, i + n, i + 2n, ...` of the sorted file list. Cheapest: no record is read
  twice. With fewer files than pipelines some pipeline would get no file at all
  (docs/design.md section 4: on TF 2.21 auto-sharding then fails at the first batch and
  the peer workers die with "Socket closed"), so:
- RECORD sharding (`num_files < num_input_pipelines`): every pipeline reads every
  file and keeps record `j` of a file when `j % n == i`. Each pipeline reads
  all the bytes, but it works for a single small validation file. Selecting by
  position within a file makes it disjoint and complete whatever order the
  files are interleaved in.

tf.data auto-sharding is switched off on the datasets we build (we shard
ourselves), so `experimental_distribute_dataset` does not shard them again.
"""

from typing import List, NamedTuple, Optional, Sequence

import tensorflow as tf


class ShardAssignment(NamedTuple):
    """What one input pipeline reads.

    Attributes:
      files: the files this pipeline opens, in sorted order.
      num_record_shards: 1 for FILE sharding (keep every record of `files`);
        n > 1 for RECORD sharding (keep record j of each file if
        `j % num_record_shards == record_shard_index`).
      record_shard_index: this pipeline's index among the record shards.
      mode: "none" (one pipeline), "file" or "record".
    """

    files: List[str]
    num_record_shards: int
    record_shard_index: int
    mode: str


def shard_files(
    files: Sequence[str],
    input_context: Optional[tf.distribute.InputContext] = None,
) -> ShardAssignment:
    """Chooses FILE or RECORD sharding for one input pipeline.

    Args:
      files: all data files (any order; they are sorted here).
      input_context: from `distribute_datasets_from_function`; None means a
        single pipeline reads everything.

    Returns:
      The `ShardAssignment` of pipeline `input_context.input_pipeline_id`.

    Raises:
      ValueError: if `files` is empty.
    """
    files = sorted(files)
    if not files:
        raise ValueError("No input files to shard.")
    if input_context is None or input_context.num_input_pipelines <= 1:
        return ShardAssignment(files, 1, 0, "none")
    count = input_context.num_input_pipelines
    index = input_context.input_pipeline_id
    if len(files) >= count:
        return ShardAssignment(files[index::count], 1, 0, "file")
    return ShardAssignment(files, count, index, "record")


def records_in_shard(num_records: int, assignment: ShardAssignment) -> int:
    """Records of a file with `num_records` records that this pipeline keeps."""
    count, index = assignment.num_record_shards, assignment.record_shard_index
    return max(0, (num_records - index + count - 1) // count)


def replicas_per_pipeline(input_context: Optional[tf.distribute.InputContext]) -> int:
    """Replicas fed by one input pipeline (each takes one batch per step)."""
    if input_context is None:
        return 1
    return max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def per_replica_batch_size(
    global_batch_size: int, input_context: Optional[tf.distribute.InputContext]
) -> int:
    """The batch size of one replica.

    Args:
      global_batch_size: batch size summed over all replicas.
      input_context: None for a single replica.

    Returns:
      `global_batch_size / num_replicas_in_sync`.

    Raises:
      ValueError: if the global batch does not divide evenly between replicas.
    """
    if input_context is None:
        return global_batch_size
    replicas = input_context.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"DataConfig.global_batch_size={global_batch_size} is not divisible by "
            f"the {replicas} replicas in sync; use a multiple of {replicas}."
        )
    return global_batch_size // replicas
