"""Builds ImageNet-format TFRecord shards from a folder of class sub-folders.

Usage::

    python -m polynet_tf.data.build_tfrecords \\
        --image_dir DIR --output_dir OUT --num_shards N \\
        [--validation_fraction F] [--num_validation_shards M] \\
        [--on_error fail|skip] [--num_threads T] [--seed S] \\
        [--label_offset K] [--jpeg_quality Q] [--max_pixels P] [--noprogress]

`DIR` holds one sub-folder per class (`DIR/<class>/**/<image>`); class `i` of
the sorted folder names gets label `i + label_offset`. `OUT` receives
`train-00000-of-0000N ...`, optionally `validation-*` shards, and
`class_index.json` (format in `example_format`).

- Deterministic: the same files, flags and seed give byte-identical shards. The
  validation images of each class and the shard of every image are drawn from
  the seed before any work starts; workers only convert images, and results
  are written in that fixed order whatever order the workers finish in.
- Parallel: a thread pool converts images (PIL releases the GIL while
  decoding and encoding).
- Images that are not baseline RGB JPEGs are re-encoded (`image_conversion`).
- Unreadable files: `--on_error fail` (default) stops and names the file;
  `--on_error skip` leaves them out and lists them all at the end (and in
  `class_index.json`).
- Each shard is written under a temporary name and renamed when complete.
- `DIR` and `OUT` may be any TensorFlow filesystem URI (`gs://bucket/images`):
  every file is read and written through `tf.io.gfile`. Readers match only
  the final shard names, never the hidden temporary ones (`polynet_tf.fileio`).
"""

import collections
import concurrent.futures
import os
import random
import re
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf
from absl import flags
from tqdm import tqdm

from polynet_tf import cli, fileio
from polynet_tf.data import example_format, image_conversion


class BuildError(RuntimeError):
    """A build stopped: the message names the cause and the remedy."""


class ImageItem(NamedTuple):
    """One source image: path relative to the image folder, and its class."""

    relative_path: str
    class_index: int


class BuildSummary(NamedTuple):
    """What a build wrote.

    Attributes:
      classes: class names in label order.
      num_examples: split -> records written.
      shard_sizes: shard file name -> records.
      skipped: `(relative_path, reason)` of every unreadable file skipped.
      reencoded: images re-encoded to baseline RGB JPEG.
      class_index_path: where `class_index.json` was written.
    """

    classes: List[str]
    num_examples: Dict[str, int]
    shard_sizes: Dict[str, int]
    skipped: List[Tuple[str, str]]
    reencoded: int
    class_index_path: str


def list_images(image_dir: str) -> Tuple[List[str], List[ImageItem]]:
    """Finds the classes (sub-folders) and their files, sorted.

    Args:
      image_dir: folder with one sub-folder per class.

    Returns:
      `(classes, items)`; hidden files and folders are ignored.

    Raises:
      BuildError: if the folder does not exist or has no class sub-folders.
    """
    if not fileio.isdir(image_dir):
        raise BuildError(f"--image_dir {image_dir!r} is not a folder.")
    classes = sorted(
        name for name in fileio.listdir(image_dir)
        if not name.startswith(".") and fileio.isdir(fileio.join(image_dir, name)))
    if not classes:
        raise BuildError(
            f"--image_dir {image_dir!r} has no sub-folders; it must hold one "
            "sub-folder per class (DIR/<class>/<image>).")
    items = []
    for class_index, name in enumerate(classes):
        class_dir = fileio.join(image_dir, name)
        # tf.io.gfile.walk, like os.walk, descends only into the `dirs` left in place.
        for root, dirs, files in tf.io.gfile.walk(class_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            folder = fileio.join(name, root[len(class_dir):].strip("/"))
            for file_name in sorted(files):
                if file_name.startswith("."):
                    continue
                items.append(ImageItem(fileio.join(folder, file_name), class_index))
    items.sort()
    return classes, items


def split_validation(items: Sequence[ImageItem], fraction: float,
                     seed: int) -> Tuple[List[ImageItem], List[ImageItem]]:
    """Draws `round(fraction * n)` validation images from each class.

    Returns:
      `(train_items, validation_items)`, each sorted.
    """
    by_class = collections.defaultdict(list)
    for item in items:
        by_class[item.class_index].append(item)
    train, validation = [], []
    for class_index in sorted(by_class):
        members = sorted(by_class[class_index])
        random.Random(f"{seed}/validation/{class_index}").shuffle(members)
        count = int(round(fraction * len(members)))
        validation.extend(members[:count])
        train.extend(members[count:])
    return sorted(train), sorted(validation)


def assign_shards(items: Sequence[ImageItem], num_shards: int, seed: int,
                  split: str) -> List[List[ImageItem]]:
    """Shuffles the items (seeded) and cuts them into near-equal shards."""
    shuffled = sorted(items)
    random.Random(f"{seed}/{split}").shuffle(shuffled)
    base, extra = divmod(len(shuffled), num_shards)
    shards, start = [], 0
    for index in range(num_shards):
        end = start + base + (1 if index < extra else 0)
        shards.append(shuffled[start:end])
        start = end
    return shards


def _convert(image_dir: str, item: ImageItem, quality: int, max_pixels: int):
    path = fileio.join(image_dir, item.relative_path)
    try:
        data = fileio.read_bytes(path)
        return image_conversion.to_rgb_jpeg(data, quality, max_pixels), None
    except tf.errors.OpError as error:
        return None, error.message
    except (image_conversion.UnreadableImageError, OSError) as error:
        return None, str(error)


def _ordered_results(executor, function, items, max_in_flight: int) -> Iterator:
    """`executor.map` with a bounded number of pending tasks, in input order."""
    pending = collections.deque()
    items = iter(items)
    for item in items:
        pending.append(executor.submit(function, item))
        if len(pending) >= max_in_flight:
            break
    while pending:
        result = pending.popleft().result()
        for item in items:
            pending.append(executor.submit(function, item))
            break
        yield result


def _check_output_dir(output_dir: str, planned: Sequence[str]) -> None:
    shard_pattern = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
    stale = sorted(name for name in fileio.listdir(output_dir)
                   if shard_pattern.match(name) and name not in planned)
    if stale:
        raise BuildError(
            f"--output_dir {output_dir!r} already holds shards of another build "
            f"({stale[0]}, ...) that the readers' globs would pick up; use an "
            "empty folder or delete them.")


def build_tfrecords(
    image_dir: str,
    output_dir: str,
    num_shards: int,
    validation_fraction: float = 0.0,
    num_validation_shards: Optional[int] = None,
    on_error: str = "fail",
    num_threads: Optional[int] = None,
    seed: int = 0,
    label_offset: int = 0,
    jpeg_quality: int = image_conversion.DEFAULT_JPEG_QUALITY,
    max_pixels: int = image_conversion.MAX_PIXELS,
    progress: bool = True,
) -> BuildSummary:
    """Converts a class-folder tree into TFRecord shards and a class index.

    Args:
      image_dir: folder with one sub-folder per class.
      output_dir: where shards and `class_index.json` go (created if missing).
      num_shards: training shards (capped at the number of training images).
      validation_fraction: fraction of each class held out, in [0, 1).
      num_validation_shards: validation shards; default
        `max(1, round(num_shards * validation_fraction))`.
      on_error: "fail" stops at the first unreadable file, "skip" leaves it
        out and reports it.
      num_threads: conversion threads; default: the number of CPUs.
      seed: seed of the validation draw and of the shard assignment.
      label_offset: stored label of the first class (1 for ImageNet-tools
        compatibility).
      jpeg_quality: quality of re-encoded images.
      max_pixels: images with more pixels are unreadable (`on_error` applies);
        the default, PIL's decompression-bomb threshold, is far above photographs.
      progress: show a tqdm progress bar.

    Returns:
      A `BuildSummary`.

    Raises:
      BuildError: for bad arguments, an unusable folder, or (with
        on_error="fail") an unreadable image.
    """
    if on_error not in ("fail", "skip"):
        raise BuildError(f"--on_error must be 'fail' or 'skip'; received {on_error!r}.")
    if num_shards < 1:
        raise BuildError(f"--num_shards must be >= 1; received {num_shards}.")
    if not 0.0 <= validation_fraction < 1.0:
        raise BuildError(
            f"--validation_fraction must be in [0, 1); received {validation_fraction}.")
    classes, items = list_images(image_dir)
    if not items:
        raise BuildError(f"--image_dir {image_dir!r} has class folders but no files.")
    train, validation = split_validation(items, validation_fraction, seed)
    if num_validation_shards is None:
        num_validation_shards = max(1, int(round(num_shards * validation_fraction)))
    plan = [("train", train, num_shards)]
    if validation:
        plan.append(("validation", validation, num_validation_shards))

    shards = []  # (file name, items)
    for split, split_items, count in plan:
        count = max(1, min(count, len(split_items)))
        for index, shard_items in enumerate(assign_shards(split_items, count, seed, split)):
            shards.append((example_format.shard_name(split, index, count), shard_items))
    fileio.makedirs(output_dir)
    _check_output_dir(output_dir, [name for name, _ in shards])

    skipped: List[Tuple[str, str]] = []
    shard_sizes: Dict[str, int] = {}
    staged: Dict[str, str] = {}  # shard name -> its hidden temporary file
    reencoded = 0
    total = sum(len(shard_items) for _, shard_items in shards)
    threads = num_threads or os.cpu_count() or 1
    bar = tqdm(total=total, unit="img", desc="build_tfrecords", disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as executor:
        for name, shard_items in shards:
            results = _ordered_results(
                executor, lambda item: (item, *_convert(image_dir, item, jpeg_quality,
                                                     max_pixels)),
                shard_items, max_in_flight=4 * threads)

            def records(results=results):
                nonlocal reencoded
                for item, jpeg, error in results:
                    bar.update(1)
                    if jpeg is None:
                        if on_error == "fail":
                            source = fileio.join(image_dir, item.relative_path)
                            raise BuildError(
                                f"Cannot read image {source!r}: "
                                f"{error}. Fix or remove the file, or pass --on_error=skip "
                                "to leave unreadable files out (they are listed at the end).")
                        skipped.append((item.relative_path, error))
                        continue
                    reencoded += jpeg.reencoded
                    class_name = classes[item.class_index]
                    yield example_format.make_example(
                        jpeg.data, item.class_index + label_offset, class_name,
                        jpeg.height, jpeg.width, item.relative_path,
                    ).SerializeToString()

            try:
                # Under a hidden name until every shard is complete: a build
                # that stops leaves no shard of its own behind (all or nothing).
                staged[name] = fileio.temporary_name(fileio.join(output_dir, name))
                shard_sizes[name] = example_format.write_shard(staged[name], records())
            except BaseException:
                bar.close()
                executor.shutdown(wait=True, cancel_futures=True)
                for path in staged.values():
                    fileio.remove_tree(path)
                raise
    bar.close()
    _publish(output_dir, staged)

    num_examples = collections.Counter()
    splits: Dict[str, Dict] = {}
    for name, size in shard_sizes.items():
        split = name.split("-")[0]
        num_examples[split] += size
        splits.setdefault(split, {"num_examples": 0, "shards": {}})
        splits[split]["shards"][name] = size
        splits[split]["num_examples"] += size
    skipped.sort()
    index_path = example_format.write_class_index(
        output_dir, classes, label_offset, splits=splits,
        skipped=[{"path": path, "reason": reason} for path, reason in skipped],
        reencoded=reencoded)
    return BuildSummary(classes, dict(num_examples), shard_sizes, skipped, reencoded,
                        index_path)


def _publish(output_dir: str, staged: Dict[str, str]) -> None:
    """Renames the finished shards into place; on failure removes them all."""
    moved = []
    try:
        for name, path in staged.items():
            target = fileio.join(output_dir, name)
            tf.io.gfile.rename(path, target, overwrite=True)
            moved.append(target)
    except BaseException:
        for path in moved + list(staged.values()):
            fileio.remove_tree(path)
        raise


_PROG = "python -m polynet_tf.data.build_tfrecords"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("image_dir", None, "One sub-folder per class (any URI).", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where shards and class_index.json go (any URI).",
                    flag_values=FLAGS)
flags.DEFINE_integer("num_shards", None, "Training shards (>= 1).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_float("validation_fraction", 0.0, "Fraction of each class held out for "
                   "validation, in [0, 1).", lower_bound=0.0, upper_bound=0.999999,
                   flag_values=FLAGS)
flags.DEFINE_integer("num_validation_shards", None, "Validation shards (>= 1; default "
                     "round(num_shards * validation_fraction)).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Unreadable file: stop (fail) "
                  "or leave it out (skip).", flag_values=FLAGS)
flags.DEFINE_integer("num_threads", None, "Conversion threads (>= 1; default: number of "
                     "CPUs).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the validation draw and shard assignment.",
                     flag_values=FLAGS)
flags.DEFINE_integer("label_offset", 0, "Stored label of the first class (1: ImageNet "
                     "tools).", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("jpeg_quality", image_conversion.DEFAULT_JPEG_QUALITY,
                     "Quality of re-encoded images, 1..100.", lower_bound=1, upper_bound=100,
                     flag_values=FLAGS)
flags.DEFINE_integer("max_pixels", image_conversion.MAX_PIXELS, "Images with more pixels "
                     "(width x height) are treated as unreadable (--on_error).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_bool("progress", True, "Show a progress bar (--noprogress hides it).",
                  flag_values=FLAGS)
flags.mark_flags_as_required(["image_dir", "output_dir", "num_shards"], flag_values=FLAGS)


def _run(args) -> int:
    try:
        summary = build_tfrecords(
            args.image_dir, args.output_dir, args.num_shards,
            validation_fraction=args.validation_fraction,
            num_validation_shards=args.num_validation_shards,
            on_error=args.on_error, num_threads=args.num_threads, seed=args.seed,
            label_offset=args.label_offset, jpeg_quality=args.jpeg_quality,
            max_pixels=args.max_pixels, progress=args.progress)
    except BuildError as error:
        print(f"build_tfrecords: error: {error}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split}: {n}" for split, n in sorted(summary.num_examples.items()))
    print(f"Wrote {len(summary.shard_sizes)} shard(s) ({counts} images, "
          f"{len(summary.classes)} classes, {summary.reencoded} re-encoded) and "
          f"{summary.class_index_path}.")
    if summary.skipped:
        print(f"Skipped {len(summary.skipped)} unreadable file(s):", file=sys.stderr)
        for path, reason in summary.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status.

    0 done, 1 the build failed (nothing of it is left in --output_dir),
    2 usage error (a missing or out-of-range flag, named in the message).
    """
    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=())


if __name__ == "__main__":
    cli.app_run(main)
