"""Small real images for the evaluation tests (no downloads)."""

import io

import numpy as np
from PIL import Image


def photo(height, width, index=0):
    """A real photograph (scikit-learn's sample images) resized to height x width.

    Args:
      height: output height.
      width: output width.
      index: 0 (china.jpg) or 1 (flower.jpg).

    Returns:
      uint8 `[height, width, 3]`.
    """
    from sklearn.datasets import load_sample_images  # Ships the JPEGs; no download.

    image = Image.fromarray(load_sample_images().images[index])
    return np.asarray(image.resize((width, height), Image.BILINEAR))


def solid(height, width, rgb):
    """A uniform colour image, uint8 `[height, width, 3]`."""
    return np.broadcast_to(np.asarray(rgb, np.uint8), (height, width, 3)).copy()


def encode_jpeg(array, quality=95):
    """JPEG bytes of a uint8 RGB array."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=quality)
    return out.getvalue()
