"""ImageNet input normalisation and label decoding for PolyNet.

The released weights take RGB scaled to [0, 1], then normalised per channel
with the ImageNet mean and standard deviation (the `pretrainedmodels` settings
of `polynet`: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
"""

import functools
import importlib.resources
import json

import keras
import numpy as np

# The one definition of the statistics (the input contract's defaults).
from polynet_tf.data.normalization import IMAGENET_MEAN, IMAGENET_STD


def preprocess_input(x, data_format=None):
    """Normalises RGB images the way the released PolyNet weights expect.

    Args:
        x: images with values in [0, 255], uint8 or float, any batch shape
            (a single HxWx3 image or NxHxWx3, ...), channels last unless
            `data_format="channels_first"`. A NumPy array or a tensor of the
            current backend.
        data_format: "channels_last" (default) or "channels_first".

    Returns:
        float32 images `(x / 255 - mean) / std`, a NumPy array for NumPy
        input, otherwise a backend tensor.

    Raises:
        ValueError: unknown data format or a channel axis that is not 3.
    """
    data_format = data_format or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    shape = (3,) if data_format == "channels_last" else (3, 1, 1)
    channel_axis = -1 if data_format == "channels_last" else -3
    mean = np.reshape(np.asarray(IMAGENET_MEAN, "float32") * 255.0, shape)
    scale = np.reshape(1.0 / (255.0 * np.asarray(IMAGENET_STD, "float32")), shape)
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x)
        _check_channels(x.shape, channel_axis)
        return ((x.astype("float32") - mean) * scale).astype("float32")
    _check_channels(tuple(keras.ops.shape(x)), channel_axis)
    x = keras.ops.cast(x, "float32")
    return (x - mean) * scale


def _check_channels(shape, channel_axis):
    if len(shape) < 3 or shape[channel_axis] != 3:
        raise ValueError(
            "`preprocess_input` expects RGB images with 3 channels on axis "
            f"{channel_axis} (HxWx3 or NxHxWx3). Received shape: {tuple(shape)}"
        )


@functools.lru_cache(maxsize=1)
def imagenet_class_index():
    """The 1000 ImageNet classes as [(synset, name)], in label order (no download)."""
    text = (
        importlib.resources.files("polynet_tf")
        .joinpath("resources/imagenet_class_index.json")
        .read_text(encoding="utf-8")
    )
    index = json.loads(text)
    return [tuple(index[str(i)]) for i in range(len(index))]


def decode_predictions(preds, top=5):
    """Decodes a batch of ImageNet predictions into (synset, name, score) tuples.

    Args:
        preds: array of shape (samples, 1000).
        top: how many of the best classes to return per sample.

    Returns:
        One list per sample of `top` tuples `(synset, class_name, score)`,
        best first.

    Raises:
        ValueError: `preds` is not of shape (samples, 1000).
    """
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    classes = imagenet_class_index()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array "
            f"of shape (samples, {len(classes)})). Received array with shape: "
            f"{preds.shape}"
        )
    if int(top) < 1:
        raise ValueError(f"`top` must be at least 1. Received: top={top}")
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][: int(top)]
        results.append([(*classes[i], float(row[i])) for i in best])
    return results
