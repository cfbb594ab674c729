"""Seed inputs of the fuzz targets: small valid files of every kind."""

import io

import numpy as np
import pytest
from PIL import Image


def image_bytes(fmt, height=20, width=24, seed=0, **options):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # Structure as well as noise: decoders take their structured paths.
    array[: height // 2, : width // 3] = (200, 30, 30)
    image = Image.fromarray(array)
    if fmt == "GIF":
        image = image.quantize(16)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def seed_images():
    """Valid JPEG (baseline and progressive), PNG, GIF and BMP files."""
    return [image_bytes("JPEG", quality=90), image_bytes("JPEG", progressive=True, seed=1),
            image_bytes("PNG", seed=2), image_bytes("GIF", seed=3), image_bytes("BMP", seed=4),
            image_bytes("PNG", 3, 50, seed=5)]
