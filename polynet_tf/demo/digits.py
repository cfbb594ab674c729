"""Writes scikit-learn's handwritten digits as JPEG files in class folders.

`python -m polynet_tf.demo.digits --output_dir DIR [--image_size 40]
[--held_out_fraction 0.1] [--max_per_class N] [--seed 0]` writes

    DIR/train/<digit>/digit_<index>.jpg      training and validation images
    DIR/held_out/<digit>/digit_<index>.jpg   never seen by training or validation

from the 1797 8x8 images of `sklearn.datasets.load_digits` (16 grey levels,
white ink on black), each upscaled with bicubic interpolation to
`image_size` x `image_size` and saved as an RGB JPEG. `DIR/train` is the
`--image_dir` of `python -m polynet_tf.data.build_tfrecords`, which splits off
the validation shards itself; `DIR/held_out` is what the demo classifies
through the exported model. The split is a pure function of the seed; the
folder is written under a temporary name and renamed when complete (`DIR` may
be a TensorFlow filesystem URI; see `polynet_tf.fileio` for what a rename is
on object stores).
"""

import io
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from polynet_tf import cli, fileio

SPLITS = ("train", "held_out")
# load_digits stores 17 grey levels, 0 (paper) to 16 (ink).
_MAX_LEVEL = 16.0


class DigitsError(RuntimeError):
    """The dataset cannot be written: the message says why and what to do."""


def load_digit_arrays():
    """Returns `(images, labels)`: uint8 (1797, 8, 8) in [0, 255] and int labels.

    Raises:
        DigitsError: if scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise DigitsError("scikit-learn is needed for the digits dataset: "
                          "pip install 'polynet-tf[demo]' (or scikit-learn).") from None
    digits = load_digits()
    images = np.round(digits.images * (255.0 / _MAX_LEVEL)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def split_indices(labels, held_out_fraction: float, seed: int,
                  max_per_class: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Draws a per-class held-out set; optionally keeps fewer images per class.

    Args:
        labels: class of each image.
        held_out_fraction: fraction of each class's kept images held out.
        seed: seeds the per-class shuffles.
        max_per_class: keep at most this many images of each class (smaller
            runs); None keeps all.

    Returns:
        {"train": indices, "held_out": indices}, each sorted.
    """
    train, held_out = [], []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        members = np.random.default_rng([seed, int(digit)]).permutation(members)
        if max_per_class is not None:
            members = members[:max_per_class]
        count = int(round(held_out_fraction * len(members)))
        held_out.extend(members[:count])
        train.extend(members[count:])
    return {"train": np.sort(np.array(train, np.int64)),
            "held_out": np.sort(np.array(held_out, np.int64))}


def upscale(image, image_size: int) -> Image.Image:
    """An 8x8 uint8 digit as a bicubic-upscaled RGB PIL image."""
    grey = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BICUBIC)
    return grey.convert("RGB")


def write_digits(output_dir: str, image_size: int = 40, held_out_fraction: float = 0.1,
                 seed: int = 0, max_per_class: Optional[int] = None,
                 jpeg_quality: int = 95) -> Dict[str, int]:
    """Writes the digits as JPEG files in `output_dir/{train,held_out}/<digit>/`.

    Args:
        output_dir: must not exist yet (or be an empty folder).
        image_size: side of the saved images in pixels (>= 8).
        held_out_fraction: per-class fraction in [0, 1) put in `held_out`.
        seed: the split's seed.
        max_per_class: at most this many images per class (None: all).
        jpeg_quality: JPEG quality, 1-100.

    Returns:
        Number of images written per split.

    Raises:
        DigitsError: on bad arguments or an existing, non-empty `output_dir`.
    """
    if image_size < 8:
        raise DigitsError(f"--image_size must be >= 8 (the digits are 8x8), got {image_size}.")
    if not 0.0 <= held_out_fraction < 1.0:
        raise DigitsError(f"--held_out_fraction must be in [0, 1), got {held_out_fraction}.")
    if max_per_class is not None and max_per_class < 2:
        raise DigitsError(f"--max_per_class must be >= 2, got {max_per_class}.")
    if not 1 <= jpeg_quality <= 100:
        raise DigitsError(f"--jpeg_quality must be in [1, 100], got {jpeg_quality}.")
    if fileio.exists(output_dir) and (not fileio.isdir(output_dir)
                                      or fileio.listdir(output_dir)):
        raise DigitsError(f"--output_dir {output_dir!r} already exists and is not empty: "
                          "choose a new folder or delete it.")
    images, labels = load_digit_arrays()
    indices = split_indices(labels, held_out_fraction, seed, max_per_class)
    with fileio.temporary_directory_beside(output_dir) as staging:
        for split in SPLITS:
            for index in indices[split]:
                folder = fileio.join(staging, split, str(labels[index]))
                fileio.makedirs(folder)
                buffer = io.BytesIO()
                upscale(images[index], image_size).save(buffer, format="JPEG",
                                                        quality=jpeg_quality)
                with tf.io.gfile.GFile(fileio.join(folder, f"digit_{index:04d}.jpg"),
                                       "wb") as stream:
                    stream.write(buffer.getvalue())
        if fileio.isdir(output_dir):
            fileio.remove_tree(output_dir)  # empty (checked above); rename needs it gone
        fileio.move_into_place(staging, output_dir)
    return {split: len(indices[split]) for split in SPLITS}


_PROG = "python -m polynet_tf.demo.digits"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("output_dir", None, "New folder; receives train/<digit>/ and "
                    "held_out/<digit>/ (any URI).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 40, "Side in pixels.", lower_bound=8, flag_values=FLAGS)
flags.DEFINE_float("held_out_fraction", 0.1, "Per-class fraction kept out of training and "
                   "validation, in [0, 1).", lower_bound=0.0, upper_bound=0.999999,
                   flag_values=FLAGS)
flags.DEFINE_integer("max_per_class", None, "Keep at most this many images per class (smaller "
                     "runs).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the split.", flag_values=FLAGS)
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality, 1..100.", lower_bound=1, upper_bound=100,
                     flag_values=FLAGS)
flags.mark_flags_as_required(["output_dir"], flag_values=FLAGS)


def main(argv=None):
    """Exit status: 0 written, 2 usage error or a refused folder/size (named)."""
    from polynet_tf import cli  # noqa: PLC0415

    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=(DigitsError,))


def _run(args):
    counts = write_digits(args.output_dir, args.image_size, args.held_out_fraction,
                          args.seed, args.max_per_class, args.jpeg_quality)
    print(f"wrote {counts['train']} training and {counts['held_out']} held-out "
          f"{args.image_size}x{args.image_size} digits to {args.output_dir}")
    return 0


if __name__ == "__main__":
    cli.app_run(main)
