"""The digits writer: class folders of JPEGs, a deterministic disjoint split, faithful pixels."""

import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from polynet_tf.demo import digits


def _files(root):
    found = {}
    for split in digits.SPLITS:
        for label in sorted(os.listdir(os.path.join(root, split))):
            for name in sorted(os.listdir(os.path.join(root, split, label))):
                found[(split, label, name)] = os.path.join(root, split, label, name)
    return found


def test_writes_a_deterministic_disjoint_split_of_faithful_images(tmp_path):
    counts = digits.write_digits(str(tmp_path / "a"), image_size=32, held_out_fraction=0.25,
                                 seed=3, max_per_class=12)
    assert counts == {"train": 90, "held_out": 30}  # 10 classes x (9 + 3)
    files = _files(tmp_path / "a")
    for split, per_class in (("train", 9), ("held_out", 3)):
        for label in map(str, range(10)):
            assert sum(1 for s, lab, _ in files if (s, lab) == (split, label)) == per_class
    names = {split: {n for s, _, n in files if s == split} for split in digits.SPLITS}
    assert not names["train"] & names["held_out"]

    reference = load_digits()
    for (split, label, name), path in list(files.items())[::7]:
        index = int(name[len("digit_"):-len(".jpg")])
        assert int(label) == reference.target[index]
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (32, 32)
            pixels = np.asarray(image, np.float64)
        # Averaging 4x4 blocks undoes the upscaling: the 8x8 original (0..16 -> 0..255) returns.
        blocks = pixels.mean(axis=2).reshape(8, 4, 8, 4).mean(axis=(1, 3))
        original = reference.images[index] * 255.0 / 16.0
        assert np.corrcoef(blocks.ravel(), original.ravel())[0, 1] > 0.95
        assert np.abs(blocks - original).mean() < 20

    digits.write_digits(str(tmp_path / "b"), image_size=32, held_out_fraction=0.25, seed=3,
                        max_per_class=12)
    again = _files(tmp_path / "b")
    assert list(again) == list(files)
    assert all(open(files[key], "rb").read() == open(again[key], "rb").read() for key in files)
    digits.write_digits(str(tmp_path / "c"), image_size=32, held_out_fraction=0.25, seed=4,
                        max_per_class=12)
    assert list(_files(tmp_path / "c")) != list(files)  # another seed, another split


def test_bad_arguments_and_existing_folders_are_refused(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(digits.DigitsError, match="already exists and is not empty"):
        digits.write_digits(str(tmp_path / "full"), max_per_class=2)
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    with pytest.raises(digits.DigitsError, match="--image_size must be >= 8"):
        digits.write_digits(str(tmp_path / "x"), image_size=4)
    with pytest.raises(digits.DigitsError, match="--held_out_fraction"):
        digits.write_digits(str(tmp_path / "x"), held_out_fraction=1.0)
    assert digits.main(["--output_dir", str(tmp_path / "full")]) == 2
    # Nothing half-written next to the target.
    assert sorted(os.listdir(tmp_path)) == ["full"]
