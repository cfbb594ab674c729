"""Serving PolyNets with TensorFlow Serving: signatures, export, warm-up.

- `export_saved_model` (`exporter`): `BASE/NAME/VERSION/` written atomically,
  with warm-up requests and `assets.extra/polynet_export.json`.
- `SignatureOptions`, `build_export_archive` (`signatures`): the signatures.
- `preprocessing`: checked decoding; the crop and normalisation are the
  model's `polynet_tf.data.InputContract` (`SignatureOptions.contract`).
- `load_export_model` (`sources`): a model, its preprocessing and class names
  from weights, a training checkpoint or the ImageNet preset.
- `portable`: one checked `.tflite` (LiteRT) or `.onnx` (ONNX Runtime) file,
  float32, int8 (calibrated on training images, `calibration`) or float16;
  `runtimes` runs such files and reads the metadata beside and inside them.
- `python -m polynet_tf.export`: the command line.
"""

from polynet_tf.serving.exporter import (
    ExportError,
    ExportResult,
    existing_versions,
    export_saved_model,
    next_version,
    read_metadata,
)
from polynet_tf.serving.signatures import SignatureOptions, build_export_archive

__all__ = [
    "ExportError",
    "ExportResult",
    "SignatureOptions",
    "build_export_archive",
    "existing_versions",
    "export_saved_model",
    "next_version",
    "read_metadata",
]
