"""`PolyNet(weights="imagenet")` and the converter run where torch cannot be imported.

A subprocess makes `import torch` fail (an import hook), finds
the published pretrainedmodels checkpoint file already in its Keras cache (the
random reference checkpoint under the published name, its hash put in place of
the published one, as tests/weights/test_pretrained.py does) and any download
fails. It converts the checkpoint, computes logits, and runs the converter
command; the logits must match the PyTorch reference computed in this process.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # of the reference logits' standard deviation

_SCRIPT = r"""
import dataclasses, importlib.abc, sys


class NoTorch(importlib.abc.MetaPathFinder):
    # `import torch` fails from here on, as where torch is not installed.
    # (sys.modules["torch"] = None would also block it, but libraries probing
    # sys.modules for torch arrays, such as scipy's, would then fail on None.)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoTorch())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch is importable")
import keras
import numpy as np
from polynet_tf.models.architectures import get_architecture, get_pretrained_config

folder, digest, inputs_path, logits_path = sys.argv[1:5]
preset, real = get_pretrained_config(None, "imagenet")
get_architecture(preset).pretrained["imagenet"] = dataclasses.replace(
    real, sources=tuple(dataclasses.replace(s, file_hash=digest)
                        if s.layout == "pretrainedmodels" else s for s in real.sources))

def offline(*args, **kwargs):
    raise SystemExit("a download was attempted")

keras.utils.get_file = offline
from polynet_tf.models.polynet import PolyNet
from polynet_tf.convert_weights import main

model = PolyNet(weights="imagenet", classifier_activation=None)
np.save(logits_path, keras.ops.convert_to_numpy(model(np.load(inputs_path), training=False)))
del model
status = main(["--source", "pretrainedmodels", "--checkpoint",
               folder + "/models/polynet-f71d82a5.pth", "--output", folder + "/cli.weights.h5"])
assert not [name for name in sys.modules if name.split(".")[0] == "torch"]
sys.exit(status)
"""


def test_imagenet_weights_and_converter_without_torch(pretrainedmodels_reference, tmp_path):
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    placed = keras_home / "models" / "polynet-f71d82a5.pth"
    shutil.copyfile(pretrainedmodels_reference.checkpoint, placed)
    digest = hashlib.sha256(placed.read_bytes()).hexdigest()[:8]
    inputs, logits = tmp_path / "inputs.npy", tmp_path / "logits.npy"
    np.save(inputs, pretrainedmodels_reference.inputs)
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(keras_home), digest, str(inputs), str(logits)],
        env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "keras_home" / "cli.weights.h5").is_file()
    assert sorted(os.listdir(keras_home / "models")) == [
        "polynet-f71d82a5.pth", "polynet_very_deep_imagenet.weights.h5"]
    got = np.load(logits)
    expected = pretrainedmodels_reference.logits
    error = float(np.max(np.abs(got - expected)) / np.std(expected))
    assert got.shape == (2, 1000) and np.std(expected) > 0.1
    assert error <= TOLERANCE, error
