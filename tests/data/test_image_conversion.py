"""Tests of `polynet_tf.data.image_conversion`: anything PIL reads -> RGB JPEG."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from polynet_tf.data import image_conversion
from tests.data.conftest import encode, image_array


def _decode(data):
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.mode, np.asarray(image)


def test_baseline_rgb_jpeg_is_kept_byte_for_byte():
    data = encode(image_array(20, 30), "JPEG", quality=90)
    result = image_conversion.to_rgb_jpeg(data)
    assert result.data == data
    assert (result.height, result.width, result.reencoded) == (20, 30, False)


@pytest.mark.parametrize("mode, fmt, save_args", [
    ("RGB", "PNG", {}),
    ("L", "JPEG", {}),
    ("CMYK", "JPEG", {}),
    ("RGBA", "PNG", {}),
    ("P", "GIF", {}),
    ("RGB", "BMP", {}),
    ("RGB", "JPEG", {"progressive": True}),
    ("I;16", "PNG", {}),
])
def test_other_images_become_rgb_baseline_jpegs(mode, fmt, save_args):
    rgb = Image.fromarray(image_array(16, 24, seed=3))
    if mode == "I;16":
        source = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    elif mode == "P":
        source = rgb.quantize(64, dither=Image.Dither.NONE)
    else:
        source = rgb.convert(mode)
    data = encode(source, fmt, **save_args)
    result = image_conversion.to_rgb_jpeg(data)
    assert result.reencoded
    fmt_out, mode_out, pixels = _decode(result.data)
    assert (fmt_out, mode_out, pixels.shape) == ("JPEG", "RGB", (16, 24, 3))
    assert (result.height, result.width) == (16, 24)
    # Colours survive (up to JPEG loss): compare with PIL's own RGB reading.
    with Image.open(io.BytesIO(data)) as original:
        expected = np.asarray(original.convert("RGB") if mode != "I;16"
                              else rgb.convert("L").convert("RGB"))
    assert np.abs(pixels.astype(float) - expected.astype(float)).mean() < 8


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # Fully transparent black.
    result = image_conversion.to_rgb_jpeg(encode(rgba, "PNG"))
    _, _, pixels = _decode(result.data)
    assert pixels.min() >= 250


@pytest.mark.parametrize("data", [
    b"definitely not an image",
    encode(image_array(64, 64), "JPEG")[:200],   # Truncated.
    b"",
])
def test_unreadable_files_raise_with_reason(data):
    with pytest.raises(image_conversion.UnreadableImageError, match=r"\w+"):
        image_conversion.to_rgb_jpeg(data)


def _png_claiming(width, height):
    """A 1x1 PNG whose header claims `width` x `height` (CRC fixed, pixel data not)."""
    png = bytearray(encode(image_array(1, 1), "PNG"))
    ihdr = png.index(b"IHDR")
    png[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    png[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr:ihdr + 17])))
    return bytes(png)


def test_images_above_the_pixel_limit_are_refused_before_decoding():
    # 10000 x 10000 is above PIL's warning threshold and below its error: without
    # the check it would be decoded (300 MB), warning only.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(image_conversion.UnreadableImageError,
                           match="10000x10000 is 100,000,000 pixels, more than the 89,478,485"):
            image_conversion.to_rgb_jpeg(_png_claiming(10000, 10000))
    with pytest.raises(image_conversion.UnreadableImageError, match="4,096 pixels"):
        image_conversion.to_rgb_jpeg(encode(image_array(64, 64), "JPEG"), max_pixels=4095)
    assert image_conversion.to_rgb_jpeg(encode(image_array(64, 64), "JPEG"),
                                        max_pixels=4096).width == 64
