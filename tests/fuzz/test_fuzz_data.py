"""Fuzzing the shard reader (`polynet_tf.data.build_dataset`, both `on_error`
policies) and the builder (`build_tfrecords` on mutated image files).

Reader: each case is a shard whose records hold mutated images (the TFRecord
framing intact) or a shard file whose bytes are mutated (framing broken).
With on_error="skip" the pipeline ends normally with at most the stored
number of images; with "fail" it delivers every image or raises a
`tf.errors.OpError` naming `polynet_tf.data` or the file. Builder: with
on_error="skip" every mutated file is converted or listed as skipped; with
"fail" the build succeeds or raises `BuildError`, leaving no shard behind.
"""

import os

import numpy as np
import tensorflow as tf

from polynet_tf.data import DataConfig, build_dataset, example_format
from polynet_tf.data import build_tfrecords as builder
from tests.fuzz.mutation import mutate, run_cases

SIZE = 16


def _count(pattern, on_error):
    config = DataConfig(file_pattern=pattern, is_training=False, image_size=SIZE,
                        global_batch_size=4, on_error=on_error, deterministic=True, seed=0)
    return sum(int(images.shape[0]) for images, _ in build_dataset(config))


def _check_reader(path, stored):
    assert _count(path, "skip") <= stored
    try:
        delivered = _count(path, "fail")
    except tf.errors.OpError as error:
        message = error.message
        assert "polynet_tf.data" in message or os.path.basename(path) in message, message[:600]
        return "refused"
    assert delivered == stored
    return "read"


def test_shards_of_mutated_images_and_mutated_shard_files(tmp_path, seed_images):
    records = [example_format.make_example(data, index % 3, f"c{index % 3}", 20, 24,
                                           f"{index}.img").SerializeToString()
               for index, data in enumerate(seed_images)]
    good = str(tmp_path / "good")
    example_format.write_shard(good, records)
    good_bytes = open(good, "rb").read()
    path = str(tmp_path / "case")
    outcomes = {"read": 0, "refused": 0}

    def make_case(rng, number):
        if number % 3 == 2:  # the file's bytes: framing, lengths, checksums
            return None, mutate(good_bytes, rng)
        if number % 6 == 1:  # a control: intact images must all be delivered
            return records, None
        images = [mutate(seed_images[int(rng.integers(len(seed_images)))], rng)
                  for _ in range(int(rng.integers(1, 4)))]
        return [example_format.make_example(data, 1, "c1", 20, 24, "x.img")
                .SerializeToString() for data in images], None

    def check(case):
        shard_records, raw = case
        if raw is None:
            example_format.write_shard(path, shard_records)
            stored = len(shard_records)
        else:
            with open(path, "wb") as f:
                f.write(raw)
            stored = len(records)
        outcomes[_check_reader(path, stored)] += 1

    count = run_cases(make_case, check, min_cases=15, case_seconds=60)
    assert count >= 15 and outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes


def test_builder_on_mutated_image_files(tmp_path, seed_images):
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    # One build over hundreds of mutated files (skip), then builds that fail.
    for index in range(400):
        data = mutate(seed_images[index % len(seed_images)], rng)
        (folder / "ab"[index % 2] / f"{index:04d}.img").write_bytes(data)
    out = str(tmp_path / "out")
    summary = builder.build_tfrecords(str(folder), out, 2, on_error="skip", progress=False,
                                      num_threads=2)
    converted = sum(summary.num_examples.values())
    assert converted + len(summary.skipped) == 400 and summary.skipped
    # Every image the builder stored decodes (it re-encodes what it accepts).
    assert _count(os.path.join(out, "train-*"), "fail") == converted

    single = tmp_path / "single"
    (single / "a").mkdir(parents=True)
    (single / "b").mkdir(parents=True)
    (single / "b" / "good.png").write_bytes(seed_images[2])

    def make_case(case_rng, number):
        return mutate(seed_images[number % len(seed_images)], case_rng)

    def check(data):
        (single / "a" / "case.img").write_bytes(data)
        target = str(tmp_path / "fail_out")
        try:
            builder.build_tfrecords(str(single), target, 2, on_error="fail", progress=False,
                                    num_threads=1)
        except builder.BuildError as error:
            assert "case.img" in str(error)
            assert os.listdir(target) == [], os.listdir(target)
            return
        assert sorted(os.listdir(target)) == [
            "class_index.json", "train-00000-of-00002", "train-00001-of-00002"]
        tf.io.gfile.rmtree(target)

    assert run_cases(make_case, check, min_cases=30, case_seconds=60) >= 30
