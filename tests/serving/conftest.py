"""One tiny exported PolyNet shared by the serving tests (exporting takes a while)."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_WIDTH

# A small network with each kind of module; 75 is the smallest input PolyNet takes.
ARCHITECTURE = "A: 2way | B: poly3[convs] | C: 2way"
CROP_SIZE = 75
NUM_CLASSES = 7
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
# Mean and std unlike ImageNet's: the export must use the model's own.
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]
MULTICROP_SCALES = (80, 96)


def encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def random_image(height, width, seed):
    rng = np.random.default_rng(seed)
    # Smooth plus noise: resizing matters, and JPEG keeps it recognisable.
    base = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3))
    image = np.kron(base, np.ones((8, 8, 1)))[:height, :width]
    return np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)


def build_tiny_model():
    from polynet_tf import PolyNet

    return PolyNet(ARCHITECTURE, input_shape=(CROP_SIZE, CROP_SIZE, 3), classes=NUM_CLASSES,
                   width_multiplier=TINY_WIDTH, dropout_rate=0.0, seed=3)


def signature_options(multicrop=True, top_k=3):
    from polynet_tf.evaluation import protocols
    from polynet_tf.data import InputContract
    from polynet_tf.serving import SignatureOptions

    return SignatureOptions(
        contract=InputContract("single", CROP_SIZE, crop_fraction=0.875, mean=MEAN, std=STD),
        class_names=CLASS_NAMES, top_k=top_k,
        multicrop=protocols.get_protocol("polynet_multicrop", crop_size=CROP_SIZE,
                                         scales=MULTICROP_SCALES) if multicrop else None)


@pytest.fixture(scope="package")
def exported(tmp_path_factory):
    """(model, options, version directory) of one export with every signature."""
    import keras

    from polynet_tf.serving import export_saved_model

    keras.utils.set_random_seed(7)
    model = build_tiny_model()
    # Non-trivial BatchNorm statistics, so that inference mode matters.
    rng = np.random.default_rng(0)
    for variable in model.non_trainable_variables:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        elif "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    options = signature_options()
    base = str(tmp_path_factory.mktemp("models"))
    result = export_saved_model(model, base, "tiny", options,
                                description={"architecture": ARCHITECTURE})
    return model, options, result.path


def run_python(code, *args, timeout=600):
    """Runs `code` in a fresh Python (TensorFlow only, no polynet_tf import)."""
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                               text=True, timeout=timeout, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed
