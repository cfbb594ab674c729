"""The ImageNet TFRecord format: records, shard files and the class index.

Records are `tf.train.Example` protos with the fields written by TensorFlow's
ImageNet tools (`build_imagenet_data.py`) and read by TF Model Garden, so
existing ImageNet shards are read unchanged:

| key | type | value |
| --- | --- | --- |
| `image/encoded` | bytes | the JPEG file |
| `image/format` | bytes | `JPEG` |
| `image/class/label` | int64 | `class index + label_offset` (ImageNet tools: 1..1000) |
| `image/class/synset` | bytes | the class name (WordNet id for ImageNet) |
| `image/class/text` | bytes | human-readable class name |
| `image/height`, `image/width` | int64 | pixels |
| `image/colorspace`, `image/channels` | bytes, int64 | `RGB`, 3 |
| `image/filename` | bytes | the source file (relative to the image folder) |

Shards are named `<split>-<index:05d>-of-<count:05d>` like the ImageNet tools'
and are written under a temporary name (`.tmp-<pid>-<random>-<name>`,
`polynet_tf.fileio`) that is renamed once the shard is complete, so a shard
that exists is whole (on object stores such as GCS the rename is a copy, and
the final object appears only once complete). Readers skip names starting
with `.`. Paths may be any TensorFlow filesystem URI (`gs://...`).

Class index: `class_index.json` next to the shards, a JSON object::

    {
      "format": "polynet_tf.class_index",
      "version": 1,
      "label_offset": 0,
      "classes": ["n01440764", "n01443537", ...],
      "splits": {"train": {"num_examples": 1000,
                           "shards": {"train-00000-of-00002": 500, ...}}},
      "skipped": [{"path": "bad/file.jpg", "reason": "..."}],
      "reencoded": 12
    }

where the stored label of `classes[i]` is `i + label_offset`. Only `classes`
and `label_offset` are required when reading; the per-shard counts let a
resumed pipeline skip whole epochs without reading them.
"""

import json
from typing import Dict, List, Mapping, NamedTuple, Optional

import tensorflow as tf

from polynet_tf import fileio

CLASS_INDEX_FILENAME = "class_index.json"
CLASS_INDEX_FORMAT = "polynet_tf.class_index"

KEY_ENCODED = "image/encoded"
KEY_FORMAT = "image/format"
KEY_LABEL = "image/class/label"
KEY_SYNSET = "image/class/synset"
KEY_TEXT = "image/class/text"
KEY_HEIGHT = "image/height"
KEY_WIDTH = "image/width"
KEY_COLORSPACE = "image/colorspace"
KEY_CHANNELS = "image/channels"
KEY_FILENAME = "image/filename"

# What the pipeline reads; the other fields are optional so that shards written
# by other tools (with or without them) all parse.
_PARSE_FEATURES = {
    KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
    KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
    KEY_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Returns the ImageNet-style shard file name, e.g. `train-00003-of-01024`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def make_example(
    encoded_jpeg: bytes,
    label: int,
    synset: str,
    height: int,
    width: int,
    filename: str,
    text: Optional[str] = None,
) -> tf.train.Example:
    """Builds one record in the ImageNet TFRecord format.

    Args:
      encoded_jpeg: the RGB JPEG file's bytes.
      label: the stored label (class index + label offset).
      synset: the class name (folder name).
      height: image height in pixels.
      width: image width in pixels.
      filename: the source file, for error messages and evaluation reports.
      text: human-readable class name; defaults to `synset`.

    Returns:
      A `tf.train.Example`.
    """

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        KEY_ENCODED: _bytes(encoded_jpeg),
        KEY_FORMAT: _bytes(b"JPEG"),
        KEY_LABEL: _int(label),
        KEY_SYNSET: _bytes(synset.encode("utf-8")),
        KEY_TEXT: _bytes((synset if text is None else text).encode("utf-8")),
        KEY_HEIGHT: _int(height),
        KEY_WIDTH: _int(width),
        KEY_COLORSPACE: _bytes(b"RGB"),
        KEY_CHANNELS: _int(3),
        KEY_FILENAME: _bytes(filename.encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def parse_example(serialized: tf.Tensor, label_offset: int = 0):
    """Parses one serialized record (works inside `tf.function` and `tf.data`).

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      label_offset: subtracted from the stored label (1 for shards written by
        TensorFlow's ImageNet tools, whose labels are 1..1000).

    Returns:
      `(encoded_image, label, filename)`: scalar string, int32 and string
      tensors; `filename` is "" when the record has none.
    """
    parsed = tf.io.parse_single_example(serialized, _PARSE_FEATURES)
    label = tf.cast(parsed[KEY_LABEL] - label_offset, tf.int32)
    return parsed[KEY_ENCODED], label, parsed[KEY_FILENAME]


def write_shard(path: str, serialized_examples) -> int:
    """Writes records to `path` atomically (temporary name, then rename).

    Args:
      path: final shard path.
      serialized_examples: iterable of serialized `tf.train.Example` bytes.

    Returns:
      The number of records written.
    """
    count = 0
    with fileio.atomic_output(path) as temp_path:
        with tf.io.TFRecordWriter(temp_path) as writer:
            for record in serialized_examples:
                writer.write(record)
                count += 1
    return count


class ClassIndex(NamedTuple):
    """Contents of a `class_index.json` file.

    Attributes:
      classes: class names; label `i + label_offset` is `classes[i]`.
      label_offset: what was added to the class index when writing labels.
      shard_sizes: shard file name -> record count (may be empty).
      raw: the whole JSON object.
    """

    classes: List[str]
    label_offset: int
    shard_sizes: Dict[str, int]
    raw: Mapping


def write_class_index(directory: str, classes: List[str], label_offset: int,
                      **extra) -> str:
    """Writes `class_index.json` into `directory` atomically.

    Args:
      directory: folder of the shards.
      classes: class names in label order.
      label_offset: stored label of `classes[0]`.
      **extra: more JSON-serialisable top-level entries (`splits`, `skipped`).

    Returns:
      The path written.
    """
    contents = {
        "format": CLASS_INDEX_FORMAT,
        "version": 1,
        "label_offset": int(label_offset),
        "classes": list(classes),
        **extra,
    }
    path = fileio.join(directory, CLASS_INDEX_FILENAME)
    fileio.write_json(path, contents)
    return path


def read_class_index(path: str) -> ClassIndex:
    """Reads a class index file (or the one inside a folder).

    Args:
      path: a `class_index.json` file or the folder holding it.

    Returns:
      A `ClassIndex`.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if it is not a class index (no `classes` list of strings).
    """
    if fileio.isdir(path):
        path = fileio.join(path, CLASS_INDEX_FILENAME)
    if not fileio.exists(path):
        raise FileNotFoundError(
            f"No class index at {path!r}; build_tfrecords writes one next to the shards."
        )
    try:
        raw = fileio.read_json(path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from None
    classes = raw.get("classes") if isinstance(raw, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(
            f"{path!r} is not a class index: it needs a 'classes' list of strings."
        )
    shard_sizes = {}
    for split in (raw.get("splits") or {}).values():
        shard_sizes.update({k: int(v) for k, v in (split.get("shards") or {}).items()})
    return ClassIndex(classes, int(raw.get("label_offset", 0)), shard_sizes, raw)


def find_class_index(shard_paths: List[str]) -> Optional[ClassIndex]:
    """Returns the class index next to the first shard, or None if there is none."""
    if not shard_paths:
        return None
    path = fileio.join(fileio.dirname(shard_paths[0]), CLASS_INDEX_FILENAME)
    return read_class_index(path) if fileio.exists(path) else None
