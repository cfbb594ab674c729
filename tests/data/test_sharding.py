"""Tests of `polynet_tf.data.sharding` and of multi-worker input splitting."""

import os

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, build_dataset, sharding
from tests.data.conftest import FakeInputContext, collect, write_shards


def test_file_sharding_when_there_are_enough_files():
    files = [f"f{i}" for i in (4, 0, 3, 1, 2)]
    two = [sharding.shard_files(files, FakeInputContext(2, i)) for i in range(2)]
    assert [a.files for a in two] == [["f0", "f2", "f4"], ["f1", "f3"]]
    assert {a.mode for a in two} == {"file"}
    three = [sharding.shard_files(files, FakeInputContext(3, i)).files for i in range(3)]
    assert three == [["f0", "f3"], ["f1", "f4"], ["f2"]]


def test_record_sharding_when_files_are_fewer_than_workers():
    assignment = sharding.shard_files(["b", "a"], FakeInputContext(3, 2))
    assert assignment == sharding.ShardAssignment(["a", "b"], 3, 2, "record")
    # 10 records split 4/3/3 between the 3 workers.
    assert [sharding.records_in_shard(10, sharding.shard_files(["a"], FakeInputContext(3, i)))
            for i in range(3)] == [4, 3, 3]
    single = sharding.shard_files(["a"], None)
    assert single.mode == "none" and sharding.records_in_shard(10, single) == 10


def test_batch_sizes_per_replica():
    context = FakeInputContext(2, 0, replicas_per_pipeline=4)
    assert sharding.per_replica_batch_size(64, context) == 8
    assert sharding.replicas_per_pipeline(context) == 4
    with pytest.raises(ValueError, match="global_batch_size=60 is not divisible by the 8"):
        sharding.per_replica_batch_size(60, context)


@pytest.fixture(scope="module")
def six_shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("six"))
    write_shards(directory, 5, 6)  # 30 records
    return directory


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("two"))
    write_shards(directory, 7, 2)  # 14 records
    return directory


@pytest.mark.parametrize("shards, num_records, workers, is_training", [
    ("six_shards", 30, 2, False),
    ("six_shards", 30, 3, False),
    ("two_shards", 14, 3, False),   # Fewer files than workers: record sharding.
    ("six_shards", 30, 3, True),
    ("two_shards", 14, 3, True),
])
def test_workers_read_disjoint_and_complete_parts(request, shards, num_records, workers,
                                                  is_training):
    directory = request.getfixturevalue(shards)
    config = DataConfig(file_pattern=os.path.join(directory, "train-*"), image_size=8,
                        global_batch_size=workers, is_training=is_training, num_epochs=1,
                        drop_remainder=False, seed=1, deterministic=True)
    parts = []
    for worker in range(workers):
        _, labels = collect(build_dataset(config, FakeInputContext(workers, worker)))
        parts.append(labels.tolist())
    everything = sorted(label for part in parts for label in part)
    assert everything == list(range(num_records))  # Complete, nothing twice.
    assert all(part for part in parts)             # Every worker gets data.


def test_datasets_are_not_auto_sharded_again(six_shards):
    config = DataConfig(file_pattern=os.path.join(six_shards, "train-*"), seed=1)
    options = build_dataset(config).options()
    assert (options.experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF)


def test_distribute_datasets_from_function_gives_per_replica_batches(six_shards):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    config = DataConfig(file_pattern=os.path.join(six_shards, "train-*"), image_size=8,
                        global_batch_size=6, seed=1, deterministic=True)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: build_dataset(config, context))
    images, labels = next(iter(dataset))
    assert images.shape == (6, 8, 8, 3) and labels.dtype == tf.int32
    assert np.all(np.isfinite(images.numpy()))
