"""Tests of `polynet_tf.data.build_dataset`: batches, determinism, resume, errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, PipelineStats, build_dataset, write_class_index
from tests.data.conftest import FakeInputContext, collect, write_shards

_SHARDS, _PER_SHARD = 3, 8  # 24 records; label == record number.


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shards"))
    write_shards(directory, _PER_SHARD, _SHARDS)
    return directory


def _config(directory, **overrides):
    values = dict(file_pattern=os.path.join(directory, "train-*"), image_size=16,
                  global_batch_size=4, seed=3, deterministic=True,
                  shuffle_buffer_size=10, cycle_length=2)
    values.update(overrides)
    return DataConfig(**values)


def test_training_batches_have_the_contracted_shapes_and_types(shard_dir):
    dataset = build_dataset(_config(shard_dir))
    assert dataset.element_spec == (
        tf.TensorSpec([4, 16, 16, 3], tf.float32), tf.TensorSpec([4], tf.int32))
    images, labels = collect(dataset, max_batches=8)
    assert images.shape == (32, 16, 16, 3)
    assert np.all(np.isfinite(images)) and -2.2 < images.min() and images.max() < 2.7
    assert set(labels) <= set(range(24))


def test_same_seed_gives_identical_batches_and_another_seed_does_not(
        shard_dir, uninterrupted):
    first = [part[:32] for part in uninterrupted]
    again = collect(build_dataset(_config(shard_dir)), max_batches=8)
    other = collect(build_dataset(_config(shard_dir, seed=4)), max_batches=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_tensorflow_global_seed_does_not_change_the_stream(shard_dir, uninterrupted):
    tf.random.set_seed(987)
    _, labels = collect(build_dataset(_config(shard_dir)), max_batches=8)
    np.testing.assert_array_equal(labels, uninterrupted[1][:32])


def test_each_epoch_is_a_new_permutation_of_all_records(shard_dir):
    _, labels = collect(build_dataset(_config(shard_dir, num_epochs=3)))
    epochs = labels.reshape(3, 24)
    for epoch in epochs:
        assert sorted(epoch) == list(range(24))
    assert len({tuple(epoch) for epoch in epochs}) == 3


@pytest.fixture(scope="module")
def uninterrupted(shard_dir):
    return collect(build_dataset(_config(shard_dir)), max_batches=15)


@pytest.mark.parametrize("skip_steps", [4, 7, 13])
def test_resume_continues_the_uninterrupted_stream(shard_dir, uninterrupted, skip_steps):
    # 6 batches per epoch: 7 and 13 start in a later epoch.
    full_images, full_labels = uninterrupted
    images, labels = collect(build_dataset(_config(shard_dir), skip_steps=skip_steps),
                             max_batches=15 - skip_steps)
    np.testing.assert_array_equal(labels, full_labels[4 * skip_steps:])
    np.testing.assert_array_equal(images, full_images[4 * skip_steps:])


def test_resume_per_worker_with_class_index_counts(tmp_path):
    directory = str(tmp_path)
    paths = write_shards(directory, 6, 4)
    write_class_index(directory, [f"c{i}" for i in range(24)], 0, splits={"train": {
        "num_examples": 24, "shards": {os.path.basename(p): 6 for p in paths}}})
    # Worker 1 of 2, 2 replicas each: the worker delivers 2 batches of 2 per step.
    context = FakeInputContext(2, 1, replicas_per_pipeline=2)
    config = _config(directory, global_batch_size=8)
    _, full = collect(build_dataset(config, context), max_batches=12)
    _, resumed = collect(build_dataset(config, context, skip_steps=4), max_batches=4)
    # 4 steps x 2 batches x 2 images = 16 records: one epoch of its 12 + 4.
    np.testing.assert_array_equal(resumed, full[16:24])
    assert set(full.tolist()) == set(range(6, 12)) | set(range(18, 24))


def test_skipped_records_are_not_decoded(tmp_path):
    # Record 1's image is garbage; skipping the first batch must not touch it.
    write_shards(str(tmp_path), 8, 1, corrupt={1})
    config = _config(str(tmp_path), is_training=False, num_classes=8)
    _, labels = collect(build_dataset(config, skip_steps=1))
    assert labels.tolist() == [4, 5, 6, 7]


def test_undecodable_image_fails_naming_file_and_record(tmp_path):
    write_shards(str(tmp_path), 8, 2, corrupt={13})
    config = _config(str(tmp_path), is_training=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"file \S*train-00001-of-00002 record 5: could not be parsed"):
        collect(build_dataset(config))


def test_undecodable_image_is_skipped_and_counted(tmp_path):
    write_shards(str(tmp_path), 8, 2, corrupt={2, 13})
    stats = PipelineStats()
    config = _config(str(tmp_path), on_error="skip", num_epochs=1, drop_remainder=True)
    images, labels = collect(build_dataset(config, stats=stats))
    # 14 good records -> 3 full batches of 4 (the rest dropped), none corrupt.
    assert images.shape == (12, 16, 16, 3)
    assert not {2, 13} & set(labels.tolist())
    assert stats.as_dict() == {"skipped_records": 2, "corrupt_files": 0}
    assert sorted(p[2] for p in stats.problems) == [2, 5]


def _truncate(path, keep_records):
    """Cuts a shard in the middle of record `keep_records`."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    for _ in range(keep_records):
        length = int.from_bytes(data[offset:offset + 8], "little")
        offset += length + 16
    with open(path, "wb") as f:
        f.write(data[:offset + 40])


def test_truncated_shard_fails_naming_file_and_record(tmp_path):
    paths = write_shards(str(tmp_path), 8, 2)
    _truncate(paths[1], keep_records=3)
    config = _config(str(tmp_path), is_training=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"train-00001-of-00002 is corrupt or truncated at record 3"):
        collect(build_dataset(config))


def test_truncated_shard_is_skipped_from_the_bad_record_on(tmp_path):
    paths = write_shards(str(tmp_path), 8, 2)
    _truncate(paths[1], keep_records=3)
    stats = PipelineStats()
    config = _config(str(tmp_path), is_training=False, on_error="skip")
    _, labels = collect(build_dataset(config, stats=stats))
    assert sorted(labels.tolist()) == list(range(8)) + [8, 9, 10]
    assert stats.as_dict() == {"skipped_records": 0, "corrupt_files": 1}


def test_cache_serves_later_epochs_from_memory(tmp_path):
    paths = write_shards(str(tmp_path), 4, 2)
    config = _config(str(tmp_path), cache=True, num_epochs=2, shuffle_buffer_size=8)
    iterator = iter(build_dataset(config))
    first = np.concatenate([next(iterator)[1].numpy() for _ in range(2)])
    for path in paths:
        os.remove(path)
    second = np.concatenate([next(iterator)[1].numpy() for _ in range(2)])
    assert sorted(first) == sorted(second) == list(range(8))


def test_non_deterministic_mode_without_seed(shard_dir):
    config = _config(shard_dir, seed=None, deterministic=False)
    images, labels = collect(build_dataset(config), max_batches=3)
    assert images.shape == (12, 16, 16, 3)


@pytest.mark.parametrize("protocol", ["squash_center_crop", "shorter_side_center_crop"])
def test_eval_reads_everything_once_in_order_with_partial_last_batch(shard_dir, protocol):
    config = _config(shard_dir, is_training=False, global_batch_size=5, cycle_length=1,
                     eval_protocol=protocol, resize_size=20)
    images, labels = collect(build_dataset(config))
    assert labels.tolist() == list(range(24))
    assert images.shape == (24, 16, 16, 3)


def test_bad_arguments_are_rejected(shard_dir):
    with pytest.raises(ValueError, match="skip_steps"):
        build_dataset(_config(shard_dir), skip_steps=-1)
    with pytest.raises(FileNotFoundError, match="matched no TFRecord"):
        build_dataset(_config(shard_dir, file_pattern=os.path.join(shard_dir, "nope-*")))
    with pytest.raises(ValueError, match="not divisible"):
        build_dataset(_config(shard_dir, global_batch_size=5), FakeInputContext(2, 0))
