"""Turning any image file PIL reads into a baseline RGB JPEG (builder helper).

The training pipeline decodes with `tf.io.decode_and_crop_jpeg`, so every
stored image must be a JPEG that TensorFlow decodes to RGB. Baseline RGB JPEGs
are stored byte for byte; everything else (PNG, GIF, BMP, TIFF, WebP,
grayscale, CMYK, palette, alpha, 16-bit, progressive JPEG) is re-encoded.
Transparent pixels are composited onto white. EXIF orientation is not applied
(neither TensorFlow's decoder nor ImageNet's tools apply it), so stored and
re-encoded images agree.
"""

import io
import re
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_JPEG_QUALITY = 95
# PIL's own decompression-bomb threshold (a 9459 x 9459 image): far above any
# photograph a classifier trains on, and decoding more would take gigabytes.
MAX_PIXELS = 89_478_485


class UnreadableImageError(ValueError):
    """Raised when PIL cannot decode an image file."""


class RgbJpeg(NamedTuple):
    """A baseline RGB JPEG ready to store.

    Attributes:
      data: the JPEG file's bytes.
      height: pixels.
      width: pixels.
      reencoded: False when `data` is the original file unchanged.
    """

    data: bytes
    height: int
    width: int
    reencoded: bool


def _is_baseline_rgb_jpeg(image: Image.Image) -> bool:
    progressive = image.info.get("progressive") or image.info.get("progression")
    return image.format == "JPEG" and image.mode == "RGB" and not progressive


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High bit depth grayscale: scale 16-bit ranges down to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb_jpeg(data: bytes, quality: int = DEFAULT_JPEG_QUALITY,
                max_pixels: int = MAX_PIXELS) -> RgbJpeg:
    """Returns the image in `data` as a baseline RGB JPEG.

    Args:
      data: the bytes of an image file in any format PIL reads.
      quality: JPEG quality of re-encoded images.
      max_pixels: larger images (width x height from the file's header) are
        refused before anything is decoded.

    Returns:
      An `RgbJpeg`; the original bytes when they already are a baseline RGB
      JPEG.

    Raises:
      UnreadableImageError: if PIL cannot identify or fully decode the file,
        or it has more than `max_pixels` pixels (the message says why).
    """
    try:
        with warnings.catch_warnings():
            # The size is checked below, before decoding, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            width, height = image.size
            if width < 1 or height < 1:
                raise UnreadableImageError(f"empty image ({width}x{height})")
            if width * height > max_pixels:
                raise UnreadableImageError(
                    f"{width}x{height} is {width * height:,} pixels, more than the "
                    f"{max_pixels:,} an image may have (a damaged header or a "
                    "decompression bomb); scale it down to include it")
            image.load()  # Decodes every pixel: truncated files fail here.
            if _is_baseline_rgb_jpeg(image):
                return RgbJpeg(data, height, width, reencoded=False)
            rgb = _to_rgb(image)
    except UnreadableImageError:
        raise
    except UnidentifiedImageError:
        raise UnreadableImageError("not an image format PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # No memory addresses in the reason: reports must be reproducible.
        reason = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", str(error))
        raise UnreadableImageError(f"{type(error).__name__}: {reason}") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return RgbJpeg(out.getvalue(), height, width, reencoded=True)
