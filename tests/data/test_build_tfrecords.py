"""Tests of `polynet_tf.data.build_tfrecords`: class folders -> shards."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from polynet_tf.data import DataConfig, build_dataset, example_format, read_class_index
from polynet_tf.data import build_tfrecords as builder
from tests.data.conftest import collect, encode, image_array

# Every kind of file the builder must turn into an RGB JPEG, per class folder.
_FORMATS = {
    "baseline.jpg": lambda a: encode(a, "JPEG", quality=90),
    "photo.png": lambda a: encode(a, "PNG"),
    "gray.jpg": lambda a: encode(Image.fromarray(a).convert("L"), "JPEG"),
    "cmyk.jpg": lambda a: encode(Image.fromarray(a).convert("CMYK"), "JPEG"),
    "alpha.png": lambda a: encode(Image.fromarray(a).convert("RGBA"), "PNG"),
    "palette.gif": lambda a: encode(Image.fromarray(a).quantize(32), "GIF"),
}
_CLASSES = ("cat", "dog", "emu")


def _make_folder(root, unreadable=()):
    """Writes 3 classes x 6 formats (18 images, 20x28 pixels); returns root."""
    for class_index, name in enumerate(_CLASSES):
        os.makedirs(os.path.join(root, name))
        for format_index, (file_name, writer) in enumerate(_FORMATS.items()):
            array = image_array(20, 28, seed=10 * class_index + format_index)
            with open(os.path.join(root, name, file_name), "wb") as f:
                f.write(writer(array))
    for relative_path in unreadable:
        with open(os.path.join(root, relative_path), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return root


def _read_records(pattern):
    """Parsed records of all shards matching `pattern`."""
    records = []
    for path in sorted(glob.glob(pattern)):
        for serialized in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(serialized.numpy())
            records.append({key: value for key, value in example.features.feature.items()})
    return records


def test_mixed_formats_build_and_read_back_with_labels_and_shapes(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    out = str(tmp_path / "shards")
    summary = builder.build_tfrecords(image_dir, out, num_shards=2, progress=False,
                                      num_threads=2)
    assert summary.classes == list(_CLASSES)
    assert summary.num_examples == {"train": 18}
    assert summary.reencoded == 15  # All but the 3 baseline JPEGs.
    assert sorted(os.listdir(out)) == [
        "class_index.json", "train-00000-of-00002", "train-00001-of-00002"]

    records = _read_records(os.path.join(out, "train-*"))
    assert len(records) == 18
    for record in records:
        filename = record["image/filename"].bytes_list.value[0].decode()
        class_name = filename.split("/")[0]
        assert record["image/class/label"].int64_list.value[0] == _CLASSES.index(class_name)
        assert record["image/class/synset"].bytes_list.value[0].decode() == class_name
        assert record["image/format"].bytes_list.value[0] == b"JPEG"
        image = tf.io.decode_jpeg(record["image/encoded"].bytes_list.value[0])
        assert image.shape == (20, 28, 3)
        assert (record["image/height"].int64_list.value[0],
                record["image/width"].int64_list.value[0]) == (20, 28)

    # And through the evaluation pipeline: every image, right labels and shape.
    config = DataConfig(file_pattern=os.path.join(out, "train-*"), is_training=False,
                        image_size=16, global_batch_size=5)
    images, labels = collect(build_dataset(config))
    assert images.shape == (18, 16, 16, 3) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [6, 6, 6]
    index = read_class_index(out)
    assert index.classes == list(_CLASSES) and index.label_offset == 0
    assert sum(index.shard_sizes.values()) == 18


def test_same_input_gives_identical_shards(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    contents = []
    for run, threads in enumerate((1, 3)):
        out = str(tmp_path / f"out{run}")
        builder.build_tfrecords(image_dir, out, num_shards=3, validation_fraction=0.34,
                                num_threads=threads, progress=False, seed=7)
        contents.append({name: open(os.path.join(out, name), "rb").read()
                         for name in sorted(os.listdir(out))})
    assert contents[0] == contents[1]
    assert "validation-00000-of-00001" in contents[0]


def test_validation_split_is_per_class_and_disjoint(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    out = str(tmp_path / "shards")
    summary = builder.build_tfrecords(image_dir, out, num_shards=2,
                                      validation_fraction=0.34, progress=False)
    assert summary.num_examples == {"train": 12, "validation": 6}
    names = {split: {r["image/filename"].bytes_list.value[0]
                     for r in _read_records(os.path.join(out, f"{split}-*"))}
             for split in ("train", "validation")}
    assert not names["train"] & names["validation"]
    labels = [r["image/class/label"].int64_list.value[0]
              for r in _read_records(os.path.join(out, "validation-*"))]
    assert sorted(labels) == [0, 0, 1, 1, 2, 2]


def test_unreadable_file_is_skipped_and_reported(tmp_path, capsys):
    image_dir = _make_folder(str(tmp_path / "images"),
                             unreadable=("dog/broken.jpg", "emu/empty.png"))
    open(os.path.join(image_dir, "emu", "empty.png"), "wb").close()
    out = str(tmp_path / "shards")
    status = builder.main(["--image_dir", image_dir, "--output_dir", out,
                           "--num_shards", "2", "--on_error", "skip", "--noprogress"])
    assert status == 0
    stderr = capsys.readouterr().err
    assert "Skipped 2 unreadable file(s)" in stderr
    assert "dog/broken.jpg" in stderr and "emu/empty.png" in stderr
    index = read_class_index(out)
    assert [entry["path"] for entry in index.raw["skipped"]] == [
        "dog/broken.jpg", "emu/empty.png"]
    assert index.raw["splits"]["train"]["num_examples"] == 18
    assert [entry["reason"] for entry in index.raw["skipped"]] == [
        "OSError: Truncated File Read", "not an image format PIL can read"]
    # The report is reproducible too (no memory addresses in reasons).
    again = str(tmp_path / "again")
    builder.build_tfrecords(image_dir, again, num_shards=2, on_error="skip", progress=False)
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as f, open(os.path.join(again, name), "rb") as g:
            assert f.read() == g.read(), name


def test_images_above_max_pixels_follow_on_error(tmp_path, capsys):
    image_dir = _make_folder(str(tmp_path / "images"))
    Image.fromarray(image_array(30, 40)).save(os.path.join(image_dir, "dog", "large.png"))
    out = str(tmp_path / "shards")
    # 20 x 28 = 560 pixels pass, 30 x 40 = 1200 do not.
    assert builder.main(["--image_dir", image_dir, "--output_dir", out, "--num_shards", "1",
                         "--max_pixels", "600", "--on_error", "skip", "--noprogress"]) == 0
    assert read_class_index(out).raw["skipped"] == [{
        "path": "dog/large.png",
        "reason": "40x30 is 1,200 pixels, more than the 600 an image may have (a damaged "
                  "header or a decompression bomb); scale it down to include it"}]
    assert "Skipped 1 unreadable file(s)" in capsys.readouterr().err
    assert builder.main(["--image_dir", image_dir, "--output_dir", str(tmp_path / "other"),
                         "--num_shards", "1", "--max_pixels", "600", "--noprogress"]) == 1
    assert "dog/large.png" in capsys.readouterr().err


def test_unreadable_file_stops_the_build_by_default(tmp_path, capsys):
    image_dir = _make_folder(str(tmp_path / "images"), unreadable=("dog/broken.jpg",))
    out = str(tmp_path / "shards")
    with pytest.raises(builder.BuildError, match=r"dog/broken\.jpg.*--on_error=skip"):
        builder.build_tfrecords(image_dir, out, num_shards=1, progress=False)
    # Nothing half-written is left behind, under the final or temporary name.
    assert os.listdir(out) == []
    assert builder.main(["--image_dir", image_dir, "--output_dir", out,
                         "--num_shards", "1", "--noprogress"]) == 1
    assert "broken.jpg" in capsys.readouterr().err


def test_label_offset_and_bad_folders(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    out = str(tmp_path / "shards")
    builder.build_tfrecords(image_dir, out, num_shards=1, label_offset=1, progress=False)
    labels = sorted({r["image/class/label"].int64_list.value[0]
                     for r in _read_records(os.path.join(out, "train-*"))})
    assert labels == [1, 2, 3]
    assert read_class_index(out).label_offset == 1
    with pytest.raises(builder.BuildError, match="one sub-folder per class"):
        builder.build_tfrecords(str(tmp_path / "shards"), str(tmp_path / "x"), 1)
    with pytest.raises(builder.BuildError, match="another build"):
        builder.build_tfrecords(image_dir, out, num_shards=2, progress=False)


def test_write_shard_leaves_no_partial_file(tmp_path):
    path = str(tmp_path / "train-00000-of-00001")

    def records():
        yield b"one"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        example_format.write_shard(path, records())
    assert os.listdir(tmp_path) == []


def test_failure_after_written_shards_leaves_nothing_of_the_build(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    out = str(tmp_path / "shards")
    # The broken file goes to the last of 3 shards: two are complete when it fails.
    _, items = builder.list_images(image_dir)
    last = builder.assign_shards(items, 3, 0, "train")[-1][0]
    with open(os.path.join(image_dir, last.relative_path), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(builder.BuildError, match=last.relative_path):
        builder.build_tfrecords(image_dir, out, num_shards=3, progress=False, num_threads=1)
    assert os.listdir(out) == []  # No shard, no temporary file, no class index.


def test_failed_rebuild_keeps_the_previous_build_unchanged(tmp_path):
    image_dir = _make_folder(str(tmp_path / "images"))
    out = str(tmp_path / "shards")
    builder.build_tfrecords(image_dir, out, num_shards=3, progress=False)
    before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    _, items = builder.list_images(image_dir)
    last = builder.assign_shards(items, 3, 0, "train")[-1][0]
    # Changed first-shard images would change shards 0 and 1 if they were written.
    for item in builder.assign_shards(items, 3, 0, "train")[0]:
        if item.relative_path.endswith(".png"):
            with open(os.path.join(image_dir, item.relative_path), "wb") as f:
                f.write(encode(image_array(20, 28, seed=99), "PNG"))
    with open(os.path.join(image_dir, last.relative_path), "wb") as f:
        f.write(b"not an image")
    with pytest.raises(builder.BuildError):
        builder.build_tfrecords(image_dir, out, num_shards=3, progress=False)
    after = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    assert after == before


@pytest.mark.parametrize("flag,value", [
    ("num_threads", "0"), ("num_shards", "0"), ("num_shards", "-3"),
    ("validation_fraction", "1.0"), ("validation_fraction", "-0.1"),
    ("num_validation_shards", "0"), ("jpeg_quality", "101"), ("num_threads", "two")])
def test_out_of_range_option_is_a_usage_error_naming_the_flag(tmp_path, capsys, flag, value):
    image_dir = _make_folder(str(tmp_path / "images"))
    args = {"image_dir": image_dir, "output_dir": str(tmp_path / "out"), "num_shards": "2",
            flag: value}
    status = builder.main([f"--{k}={v}" for k, v in args.items()] + ["--noprogress"])
    assert status == 2
    assert f"--{flag}" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
