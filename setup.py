"""polynet-tf: PolyNet (Zhang et al., CVPR 2017) for TensorFlow 2 / Keras 3."""

import pathlib

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = {}
exec((_HERE / "polynet_tf" / "version.py").read_text(), _VERSION)

_EXTRAS = {
    # The weights converter reads PyTorch checkpoints without torch
    # (polynet_tf.weights.torch_format); kept so that "[convert]" still installs.
    # torch is a test-only dependency (scripts/setup_env.sh installs a CPU build).
    "convert": [],
    # gRPC / REST client examples for TF Serving.
    "serving": ["tensorflow-serving-api>=2.16"],
    # TFDS sources (imagenet2012 with a manual download directory, ...).
    # importlib_resources: tensorflow-datasets 4.9 imports it when preparing a
    # dataset on Python >= 3.9 but declares it only for older Pythons.
    "tfds": ["tensorflow-datasets>=4.9", "importlib_resources>=5.0"],
    # Figures: crop boxes, training curves, accuracy-vs-cost plots.
    "plot": ["matplotlib>=3.7"],
    # Running the model code on the JAX backend.
    "jax": ["jax>=0.4.20"],
    # PolyNet as a keras-hub backbone / image classifier with presets (polynet_tf.hub).
    # keras-hub itself requires tensorflow-text (matching TensorFlow's version).
    "hub": ["keras-hub>=0.32"],
    # `python -m polynet_tf.export --format litert`: the LiteRT interpreter that checks
    # (and serves) the .tflite file; the converter is TensorFlow's.
    "litert": ["ai-edge-litert>=2.0"],
    # `--format onnx`: Keras converts through tf2onnx; ONNX Runtime checks, quantizes
    # (int8) and serves the .onnx file.
    "onnx": ["onnx>=1.17", "tf2onnx>=1.16", "onnxruntime>=1.20"],
}
# The main-job demo (scripts/demo.sh): scikit-learn's digits, the report figures, the
# export's TF Serving warm-up requests, and the int8 LiteRT model it classifies with.
_EXTRAS["demo"] = sorted({"scikit-learn>=1.3", *_EXTRAS["plot"], *_EXTRAS["serving"],
                          *_EXTRAS["litert"]})
_EXTRAS["test"] = sorted(
    {
        "pytest>=7.4",
        "pytest-xdist>=3.3",
        # The xdist processes share expensive session fixtures (tests/weights).
        "filelock>=3.12",
        "ruff>=0.6",
        "scikit-learn>=1.3",
        *_EXTRAS["serving"],
        *_EXTRAS["tfds"],
        *_EXTRAS["plot"],
        *_EXTRAS["jax"],
        *_EXTRAS["hub"],
        *_EXTRAS["litert"],
        *_EXTRAS["onnx"],
    }
)

setup(
    name="polynet-tf",
    version=_VERSION["__version__"],
    description=(
        "PolyNet (PolyInception family, Very Deep PolyNet) for TensorFlow 2 and "
        "Keras 3: models, pretrained weights, multi-worker training, evaluation, "
        "export"
    ),
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["polynet_tf", "polynet_tf.*"]),
    package_data={"polynet_tf.resources": ["*.json"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "numpy>=1.23",
        "pyyaml>=6.0",
        "absl-py>=1.4",
        "tqdm>=4.64",
        "pillow>=9.5",
        "h5py>=3.8",
        "tensorboard>=2.16",
    ],
    extras_require=_EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
