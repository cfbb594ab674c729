"""Images from training shards for post-training quantization and its check.

The first `num_calibration` records of the shards matching a pattern (sorted
file names, records in order) calibrate the quantized model's ranges; the
next `num_held_out` are held out: the export measures the quantized model's
top-1 agreement with the float model on them. Every image is cut and
normalised by the model's `InputContract`, as the model sees it in serving.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.data import parse_example
from polynet_tf.data.input_contract import InputContract


@dataclasses.dataclass
class CalibrationImages:
    """Model inputs (float32 `[n, size, size, 3]`) from the shards.

    Attributes:
      pattern: the file pattern they were read from.
      calibration: the images that calibrate the quantization.
      held_out: the following images, for the agreement check (may be empty
        when the shards hold no more).
    """

    pattern: str
    calibration: np.ndarray
    held_out: np.ndarray


def read_calibration_images(pattern: str, contract: InputContract, num_calibration: int,
                            num_held_out: int) -> CalibrationImages:
    """Reads `num_calibration` then up to `num_held_out` images from the shards `pattern`.

    Args:
      pattern: TFRecord shards (a glob, any URI), records in the package's
        format (`polynet_tf.data.make_example`).
      contract: the model's input contract (crop and normalisation).
      num_calibration: images for calibration (at least 1).
      num_held_out: images after them for the check.

    Returns:
      `CalibrationImages`.

    Raises:
      ValueError: the pattern matches no file, or the shards hold fewer than
        `num_calibration` images (naming `--calibration_data`).
    """
    files = [path for path in fileio.glob(pattern) if not fileio.is_temporary(path)]
    if not files:
        raise ValueError(f"--calibration_data {pattern!r} matches no file; give the training "
                         "shards, e.g. --calibration_data records/train-*.")
    records = tf.data.TFRecordDataset(files).take(num_calibration + num_held_out)
    images = records.map(lambda record: contract.preprocess(parse_example(record)[0]),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = [batch.numpy() for batch in images.batch(64)]
    shape = (0, contract.image_size, contract.image_size, 3)
    pixels = np.concatenate(batches) if batches else np.zeros(shape, np.float32)
    if len(pixels) < num_calibration:
        raise ValueError(f"--calibration_data {pattern!r} holds {len(pixels)} image(s); "
                         f"--calibration_images asks for {num_calibration}.")
    return CalibrationImages(pattern, pixels[:num_calibration], pixels[num_calibration:])
