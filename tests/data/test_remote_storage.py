"""Shards built and read on TensorFlow filesystem URIs (`ram://`, `file://`), never with `open`."""

import os
import subprocess
import sys
import uuid

import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.data import build_tfrecords as builder
from polynet_tf.data import read_class_index
from polynet_tf.data.sources import expand_file_pattern
from tests.data.conftest import encode, image_array

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_images(root, unreadable=False):
    """2 classes x 3 JPEGs (one in a sub-folder) through tf.io.gfile; returns the listing."""
    names = []
    for class_index, name in enumerate(("ant", "bee")):
        for number, relative in enumerate(("a.jpg", "b.png", "deep/c.jpg")):
            path = fileio.join(root, name, relative)
            fileio.makedirs(fileio.dirname(path))
            with tf.io.gfile.GFile(path, "wb") as stream:
                stream.write(encode(image_array(20, 24, seed=3 * class_index + number),
                                    "PNG" if relative.endswith(".png") else "JPEG"))
            names.append(f"{name}/{relative}")
    if unreadable:
        with tf.io.gfile.GFile(fileio.join(root, "bee", "bad.jpg"), "wb") as stream:
            stream.write(b"not an image")
    return sorted(names)


def test_python_entry_reads_and_writes_ram(tmp_path):
    root = f"ram://shards-{uuid.uuid4().hex[:8]}"
    names = _write_images(f"{root}/images", unreadable=True)
    classes, items = builder.list_images(f"{root}/images")
    assert classes == ["ant", "bee"] and [i.relative_path for i in items] == sorted(
        names + ["bee/bad.jpg"])
    summary = builder.build_tfrecords(f"{root}/images", f"{root}/out", num_shards=2,
                                      on_error="skip", progress=False, num_threads=2)
    assert summary.num_examples == {"train": 6}
    assert summary.skipped[0][0] == "bee/bad.jpg"
    assert fileio.listdir(f"{root}/out") == [
        "class_index.json", "train-00000-of-00002", "train-00001-of-00002"]
    files = expand_file_pattern(f"{root}/out/train-*")
    records = sum(1 for _ in tf.data.TFRecordDataset(files))
    assert records == 6
    assert read_class_index(f"{root}/out").shard_sizes == summary.shard_sizes


def test_command_line_with_file_uris_from_an_empty_directory(tmp_path):
    _write_images(str(tmp_path / "images"))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, "-m", "polynet_tf.data.build_tfrecords",
         "--image_dir", f"file://{tmp_path}/images", "--output_dir", f"file://{tmp_path}/out",
         "--num_shards", "2", "--validation_fraction", "0.34", "--num_threads", "2",
         "--noprogress"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(work) == []  # no URI was taken for a relative local path
    assert sorted(os.listdir(tmp_path / "out")) == [
        "class_index.json", "train-00000-of-00002", "train-00001-of-00002",
        "validation-00000-of-00001"]
    index = read_class_index(str(tmp_path / "out"))
    assert index.classes == ["ant", "bee"]
    assert sum(index.shard_sizes.values()) == 6
