"""Class names of the `labels` output.

Sources, first found wins: an explicit file (`--class_names`), the
`class_index.json` beside the training shards, the ImageNet names for a
1000-class model trained on ImageNet, else the class index as text.
"""

import json
from typing import List, Optional

from polynet_tf import fileio
from polynet_tf.data import example_format


def read_class_names(path: str) -> List[str]:
    """Class names from a file.

    Accepted formats: a polynet_tf `class_index.json` (`{"classes": [...]}`),
    a Keras ImageNet index (`{"0": ["n01440764", "tench"], ...}`: the names are
    used), a JSON list of strings, or a text file with one name per line.

    Args:
      path: the file.

    Returns:
      The names in class order.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is none of the formats above.
    """
    if not fileio.isfile(path):
        raise FileNotFoundError(f"Class names file {path!r} does not exist.")
    text = fileio.read_text(path)
    if not path.endswith(".json"):
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise ValueError(f"Class names file {path!r} is empty; write one name per line.")
        return names
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Class names file {path!r} is not valid JSON: {error}") from None
    if isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        return list(raw)
    if isinstance(raw, dict) and "classes" in raw:
        return example_format.read_class_index(path).classes
    if isinstance(raw, dict) and all(key.isdigit() for key in raw):
        entries = [raw[str(i)] for i in range(len(raw)) if str(i) in raw]
        if len(entries) == len(raw):
            return [entry[-1] if isinstance(entry, list) else str(entry) for entry in entries]
    raise ValueError(
        f"Class names file {path!r} is not a class_index.json ({{'classes': [...]}}), an "
        "ImageNet index ({'0': [synset, name], ...}) or a JSON list of names.")


def imagenet_class_names() -> List[str]:
    """The 1000 ImageNet class names, in label order (no download)."""
    from polynet_tf.models.imagenet_utils import imagenet_class_index  # noqa: PLC0415

    return [name for _, name in imagenet_class_index()]


def class_names_beside_shards(file_pattern: str) -> Optional[List[str]]:
    """The classes of the `class_index.json` beside a shard pattern's files, if any."""
    if not file_pattern:
        return None
    files = sorted(f for pattern in file_pattern.split(",") if pattern.strip()
                   for f in fileio.glob(pattern.strip()))
    found = example_format.find_class_index(files)
    if found is None and files == []:
        directory = fileio.dirname(file_pattern.split(",")[0].strip())
        candidate = fileio.join(directory, example_format.CLASS_INDEX_FILENAME)
        if fileio.isfile(candidate):
            found = example_format.read_class_index(candidate)
    return None if found is None else found.classes


def index_names(num_classes: int) -> List[str]:
    """"0", "1", ...: the fallback when no names are known."""
    return [str(i) for i in range(num_classes)]
