"""Throughput of the training input pipeline against two references.

Usage::

    python benchmarks/input_pipeline.py [--cores 1] [--num_images 256]
        [--image_size 299] [--batch_size 32] [--seconds 15] [--rounds 2]
        [--allocators bfc default] [--augmentations]

Makes ImageNet-like JPEGs (500x375, quality 90, about 100 KiB each: smooth
multi-scale noise, like photographs rather than white noise), writes them as
TFRecord shards, and measures images per second per core of:

- pipeline: `polynet_tf.data.build_dataset` in training mode (interleave,
  shuffle, parse, fused `sample_distorted_bounding_box` +
  `decode_and_crop_jpeg`, bilinear resize, flip, normalise, batch, prefetch);
- (a) bare: the same per-image ops (parse, crop sampling, decode-and-crop,
  resize, flip, normalise) in a `tf.while_loop` running one image at a time,
  no tf.data, on one core;
- (b) decode-whole: the same pipeline, except that each JPEG is decoded whole
  and then cropped;
- records: the pipeline's record stages alone (interleaved checked TFRecord
  reads, shuffle, numbering, grouping in batches; nothing parsed or decoded),
  printed as milliseconds per image: the share of the pipeline's time that
  is not the per-image ops;
- reads: the shard files read alone (`TFRecordDataset`, which checks each
  record's CRC, interleaved over the files, grouped in batches; no integrity
  check of ours, no shuffle), in milliseconds per image: work the bare loop,
  which takes its records from memory, does not do and no pipeline can skip.
  The most the pipeline can reach against (a) is then bare / (bare + reads);
- unguarded: the pipeline without its error guard (the per-image ops mapped
  over single records, then batched), in milliseconds per image: what the
  guard that names a bad record's file and index costs.

Each measurement runs in its own process pinned (before TensorFlow starts) to
`--cores` CPUs (the bare loop to one), so "per core" is images/s divided by
the CPUs it was given. Variants alternate over `--rounds` rounds and the best
round of each is kept, which filters out other load on a shared machine.

Every variant is measured under each of `--allocators`: `bfc`, TensorFlow's
pooling BFC allocator for CPU memory (`TF_CPU_ALLOCATOR_USE_BFC=true` in the
environment), and `default`, TensorFlow's plain CPU allocator (glibc malloc:
each batch of float images is fresh memory from the kernel, page faults
included). docs/data.md says when to choose which.
Goal: pipeline >= 0.9x of (a) and >= 1.5x of (b).

`--augmentations` measures instead the pipeline with each augmentation of
`DataConfig` on (RandAugment with 2 ops, random erasing with probability
0.25, MixUp 0.8, CutMix 1.0, then all of them), side by side with the same
pipeline without, under the first of `--allocators`, and prints each as a
ratio to the pipeline without augmentation.
"""

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


_VARIANTS = ("pipeline", "bare", "decode_whole", "records", "reads", "unguarded")
# --augmentations: DataConfig settings of each measured pipeline.
_AUGMENTATIONS = {
    "none": {},
    "randaugment": {"randaugment_num_ops": 2},
    "random_erasing": {"random_erasing_probability": 0.25},
    "mixup": {"mixup_alpha": 0.8},
    "cutmix": {"cutmix_alpha": 1.0},
    "all": {"randaugment_num_ops": 2, "random_erasing_probability": 0.25,
            "mixup_alpha": 0.8, "cutmix_alpha": 1.0},
}


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=1, help="CPUs of the pipelines")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=299)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measuring time of each variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--allocators", nargs="+", choices=("bfc", "default"),
                        default=["bfc", "default"], help="CPU allocators to measure under")
    parser.add_argument("--augmentations", action="store_true",
                        help="measure the pipeline with each augmentation against none")
    # Internal: run one measurement in this process.
    parser.add_argument("--variant", choices=_VARIANTS + tuple(
        f"augment_{name}" for name in _AUGMENTATIONS))
    parser.add_argument("--data_dir")
    return parser.parse_args()


ARGS = _parse_args()
_AVAILABLE = sorted(os.sched_getaffinity(0))
if ARGS.variant:
    _cores = 1 if ARGS.variant == "bare" else ARGS.cores
    # Pin before TensorFlow sizes its thread pools from the CPUs it may use.
    os.sched_setaffinity(0, _AVAILABLE[:max(1, min(_cores, len(_AVAILABLE)))])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from polynet_tf.data import DataConfig, build_dataset, example_format  # noqa: E402
from polynet_tf.data import pipeline, preprocessing  # noqa: E402

_WIDTH, _HEIGHT, _QUALITY = 500, 375, 90


def make_jpeg(rng: np.random.Generator) -> bytes:
    """A photo-like 500x375 JPEG: 1/f-ish noise summed over octaves."""
    image = np.zeros((_HEIGHT, _WIDTH, 3), np.float32)
    for octave in range(1, 8):
        cells = (max(2, _HEIGHT >> (8 - octave)), max(2, _WIDTH >> (8 - octave)), 3)
        layer = rng.normal(size=cells).astype(np.float32)
        layer = np.stack([np.asarray(Image.fromarray(layer[..., c], mode="F").resize(
            (_WIDTH, _HEIGHT), Image.BICUBIC)) for c in range(3)], axis=-1)
        image += layer * (60.0 / octave ** 0.4)
    image += rng.normal(scale=8.0, size=image.shape)
    pixels = np.clip(image + 128, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=_QUALITY)
    return out.getvalue()


def write_shards(directory: str, num_images: int, num_shards: int = 8):
    rng = np.random.default_rng(0)
    records, sizes = [], []
    for number in range(num_images):
        jpeg = make_jpeg(rng)
        sizes.append(len(jpeg))
        records.append(example_format.make_example(
            jpeg, number % 1000, f"n{number % 1000:08d}", _HEIGHT, _WIDTH,
            f"{number}.JPEG").SerializeToString())
    for shard in range(num_shards):
        example_format.write_shard(
            os.path.join(directory, example_format.shard_name("train", shard, num_shards)),
            records[shard::num_shards])
    return records, float(np.mean(sizes))


def time_pipeline(dataset, batch_size: int, seconds: float) -> float:
    iterator = iter(dataset)
    for _ in range(5):  # Warm-up: tracing, buffers, autotuning.
        next(iterator)
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch, _ = next(iterator)
        images += batch.shape[0]
    return images / (time.perf_counter() - start)


def time_bare_loop(records, image_size: int, seconds: float) -> float:
    serialized = tf.constant(records)
    count = len(records)

    @tf.function
    def run(num_images):
        def body(i, checksum):
            encoded, _, _ = example_format.parse_example(serialized[i % count])
            seed = tf.stack([tf.constant(0, tf.int64), tf.cast(i, tf.int64)])
            image = preprocessing.preprocess_for_train(encoded, image_size, seed)
            return i + 1, checksum + tf.reduce_sum(image)

        _, checksum = tf.while_loop(lambda i, _: i < num_images, body,
                                    (tf.constant(0), tf.constant(0.0)),
                                    parallel_iterations=1)
        return checksum

    run(tf.constant(8))  # Trace and warm up.
    total, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(tf.constant(64)).numpy()
        total += 64
    return total / (time.perf_counter() - start)


def time_records(config, batch_size: int, seconds: float) -> float:
    """Records/s of `build_dataset`'s record stages, batched, with nothing decoded."""
    source = pipeline.sources.TFRecordSource(config, None, None)
    records = pipeline._training_records(config, source, 0, 0, 0)  # pylint: disable=protected-access
    batches = records.batch(batch_size).map(
        lambda records, indices, epochs: (tf.zeros([batch_size]), indices)).prefetch(1)
    return time_pipeline(batches, batch_size, seconds)


def time_reads(file_pattern: str, batch_size: int, seconds: float) -> float:
    """Records/s of plain `TFRecordDataset` reads of the shards, batched, nothing else."""
    files = tf.data.Dataset.list_files(file_pattern, shuffle=False)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=8 << 20),
        cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE).repeat()
    batches = records.batch(batch_size).map(
        lambda records: (tf.zeros([batch_size]), records)).prefetch(1)
    return time_pipeline(batches, batch_size, seconds)


def time_unguarded(config, batch_size: int, seconds: float) -> float:
    """Images/s of the pipeline's record stages and per-image ops without the error guard."""
    source = pipeline.sources.TFRecordSource(config, None, None)
    records = pipeline._training_records(config, source, 0, 0, 0)  # pylint: disable=protected-access
    # The pipeline's own per-record work, mapped without the guard around it.
    decoder = pipeline._BatchDecoder(config, source, 0, batch_size, pipeline.PipelineStats())  # pylint: disable=protected-access
    images = records.map(decoder._preprocess, num_parallel_calls=tf.data.AUTOTUNE)  # pylint: disable=protected-access
    return time_pipeline(images.batch(batch_size).prefetch(tf.data.AUTOTUNE), batch_size,
                         seconds)


def _decode_whole_then_crop(image_bytes, window_fn):
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    window = window_fn(tf.shape(image))
    return tf.slice(image, tf.stack([window[0], window[1], 0]),
                    tf.stack([window[2], window[3], 3]))


def _measure(directory: str, variant: str) -> float:
    """Images/s/core of one variant, measured in this (pinned) process."""
    cores = len(os.sched_getaffinity(0))
    if variant == "bare":
        with open(os.path.join(directory, "records.bin"), "rb") as f:
            records = _split_records(f.read())
        return time_bare_loop(records, ARGS.image_size, ARGS.seconds) / cores
    config = DataConfig(file_pattern=os.path.join(directory, "train-*"),
                        image_size=ARGS.image_size, global_batch_size=ARGS.batch_size,
                        shuffle_buffer_size=1024, seed=0)
    if variant == "decode_whole":
        preprocessing._decode_cropped = _decode_whole_then_crop  # pylint: disable=protected-access
    if variant == "records":
        return time_records(config, ARGS.batch_size, ARGS.seconds) / cores
    if variant == "reads":
        return time_reads(config.file_pattern, ARGS.batch_size, ARGS.seconds) / cores
    if variant == "unguarded":
        return time_unguarded(config, ARGS.batch_size, ARGS.seconds) / cores
    if variant.startswith("augment_"):
        settings = _AUGMENTATIONS[variant[len("augment_"):]]
        config = DataConfig(**{**config.to_dict(), "num_classes": 1000, **settings})
    return time_pipeline(build_dataset(config), ARGS.batch_size, ARGS.seconds) / cores


def _split_records(blob: bytes):
    records, offset = [], 0
    while offset < len(blob):
        length = int.from_bytes(blob[offset:offset + 8], "little")
        records.append(blob[offset + 8:offset + 8 + length])
        offset += 8 + length
    return records


def _run_variant(directory: str, variant: str, allocator: str) -> float:
    command = [sys.executable, os.path.abspath(__file__), "--variant", variant,
               "--data_dir", directory, "--cores", str(ARGS.cores),
               "--image_size", str(ARGS.image_size), "--batch_size", str(ARGS.batch_size),
               "--seconds", str(ARGS.seconds)]
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC=str(allocator == "bfc").lower())
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            env=env).stdout
    return json.loads(output.strip().splitlines()[-1])["images_per_second_per_core"]


def main():
    if ARGS.variant:
        rate = _measure(ARGS.data_dir, ARGS.variant)
        print(json.dumps({"images_per_second_per_core": rate}))
        return
    cores = min(ARGS.cores, len(_AVAILABLE))
    print(f"machine: {platform.machine()} {platform.processor()}, "
          f"{len(_AVAILABLE)} CPUs; pipelines pinned to {cores}, bare loop to 1; "
          f"TensorFlow {tf.__version__}")
    with tempfile.TemporaryDirectory() as directory:
        records, mean_size = write_shards(directory, ARGS.num_images)
        with open(os.path.join(directory, "records.bin"), "wb") as f:
            for record in records:
                f.write(len(record).to_bytes(8, "little") + record)
        print(f"{ARGS.num_images} JPEGs {_WIDTH}x{_HEIGHT} q{_QUALITY}, mean "
              f"{mean_size / 1024:.0f} KiB; output {ARGS.image_size}x{ARGS.image_size}, "
              f"batch {ARGS.batch_size}; best of {ARGS.rounds} rounds of "
              f"{ARGS.seconds:.0f} s")
        if ARGS.augmentations:
            _print_augmentations(directory)
            return
        best = {}
        for _ in range(ARGS.rounds):
            for allocator in ARGS.allocators:
                for variant in _VARIANTS:
                    rate = _run_variant(directory, variant, allocator)
                    key = (allocator, variant)
                    best[key] = max(best.get(key, 0.0), rate)
    print("| allocator | pipeline | (a) bare ops | (b) decode whole | pipeline / (a) "
          "(goal >= 0.9) | pipeline / (b) (goal >= 1.5) | ms per image: pipeline, bare ops, "
          "record stages alone, file reads alone, pipeline without its guard | most "
          "pipeline / (a) with the files read: bare / (bare + reads) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for allocator in ARGS.allocators:
        rate, bare, whole, records, reads, unguarded = (
            best[(allocator, variant)] for variant in _VARIANTS)
        print(f"| {allocator} | {rate:.1f} | {bare:.1f} | {whole:.1f} | "
              f"{rate / bare:.2f}x | {rate / whole:.2f}x | {1e3 / rate:.2f}, {1e3 / bare:.2f}, "
              f"{1e3 / records:.2f}, {1e3 / reads:.3f}, {1e3 / unguarded:.2f} | "
              f"{(1 / bare) / (1 / bare + 1 / reads):.2f}x |")
    print("(images/s per core; milliseconds of one core per image)")


def _print_augmentations(directory: str) -> None:
    allocator, best = ARGS.allocators[0], {}
    for _ in range(ARGS.rounds):
        for name in _AUGMENTATIONS:  # alternated, so that load hits all alike
            rate = _run_variant(directory, f"augment_{name}", allocator)
            best[name] = max(best.get(name, 0.0), rate)
    print(f"allocator {allocator}")
    print("| augmentation | images/s per core | ms per image | ratio to none |")
    print("| --- | --- | --- | --- |")
    for name, rate in best.items():
        print(f"| {name} | {rate:.1f} | {1e3 / rate:.2f} | {rate / best['none']:.2f}x |")


if __name__ == "__main__":
    main()
