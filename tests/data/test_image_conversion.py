"""Tests of `polynet_tf.data.image_conversion`: anything PIL reads -> RGB JPEG."""

import io

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
