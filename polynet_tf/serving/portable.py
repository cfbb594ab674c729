"""Exports a PolyNet as one LiteRT (`.tflite`) or ONNX (`.onnx`) file, checked in its runtime.

`export_portable` writes `OUTPUT_BASE/NAME[_int8|_float16].tflite|.onnx`
and, beside it, `FILE.json`: the export metadata (format 2: the model's
`input_contract`, class names, the checks' figures), also stored inside the
file (ONNX `metadata_props`, LiteRT flatbuffer `metadata`, key
`polynet_export`). The file takes the normalised crops the Keras model takes,
float32 `[batch, size, size, 3]`, and returns class probabilities.

Conversion is Keras's own (`model.export(format="litert"|"onnx")`: TF's
LiteRT converter, tf2onnx) of the network with its BatchNorms folded.
Quantization is post-training, calibrated on images of the training shards
(`polynet_tf.serving.calibration`): LiteRT full-integer int8 (the converter's
representative dataset; float32 input and output), LiteRT float16 weights,
ONNX Runtime static int8 (QDQ, per-channel weights).

Every file is checked before it is moved into place, in the real runtime
(`polynet_tf.serving.runtimes`): a float32 file must give the Keras model's
probabilities within `MAX_ABS_DIFFERENCE` (largest) and
`MEAN_ABS_DIFFERENCE` (mean) on random and real images; a quantized file
must run, and its size and top-1 agreement with the float model on held-out
images are measured and reported. It is written in a local scratch folder,
then moved: the metadata JSON first, the model file last, each under a
temporary name then renamed (`polynet_tf.fileio`); on any failure nothing is
left.
"""

import dataclasses
import os
import tempfile
from typing import Dict, Optional

import keras
import numpy as np

from polynet_tf import fileio
from polynet_tf.models import folding
from polynet_tf.serving import exporter, runtimes, signatures, warmup
from polynet_tf.serving.calibration import CalibrationImages

FORMATS = runtimes.FORMATS
QUANTIZATIONS = ("none", "float16", "int8")
SUPPORTED_QUANTIZATIONS = {"litert": ("none", "float16", "int8"), "onnx": ("none", "int8")}
# The keras-hub LiteRT export test's bar for float32 files (probabilities).
MAX_ABS_DIFFERENCE = 5e-5
MEAN_ABS_DIFFERENCE = 1e-5
# Neither format holds a model of 2 GiB or more in one file (ONNX: protobuf's
# limit; LiteRT: 32-bit flatbuffer offsets).
MAX_MODEL_BYTES = 2**31 - 1
_RANDOM_IMAGES = 3
_REAL_IMAGES = 8


@dataclasses.dataclass
class PortableResult:
    """What `export_portable` wrote.

    Attributes:
      path: the model file.
      metadata_path: the metadata JSON beside it.
      metadata: its contents (with `checks`).
    """

    path: str
    metadata_path: str
    metadata: Dict


def output_path(output_base: str, model_name: str, fmt: str, quantize: str = "none") -> str:
    """`OUTPUT_BASE/NAME[_QUANTIZE].tflite|.onnx`."""
    suffix = "" if quantize == "none" else f"_{quantize}"
    return fileio.join(output_base, f"{model_name}{suffix}{runtimes.EXTENSIONS[fmt]}")


def check_request(model: keras.Model, fmt: str, quantize: str, has_calibration: bool) -> None:
    """Raises ValueError, naming the flag, for an export that cannot be made.

    Checked before anything is converted or written: the format, the
    quantization it takes, the calibration images int8 needs, the runtime
    the check needs, and whether the format can hold the network.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not a single-file format; choose one of "
                         f"{list(FORMATS)} (or saved_model).")
    if quantize not in SUPPORTED_QUANTIZATIONS[fmt]:
        raise ValueError(f"--quantize {quantize} is not available for --format {fmt}; choose "
                         f"one of {list(SUPPORTED_QUANTIZATIONS[fmt])}.")
    if quantize == "int8" and not has_calibration:
        raise ValueError("--quantize int8 needs --calibration_data (training shards to "
                         "calibrate the ranges on).")
    runtimes.require_runtime(fmt)
    float_bytes = 4 * sum(int(np.prod(w.shape)) for w in model.weights)
    if float_bytes > MAX_MODEL_BYTES:
        raise ValueError(
            f"--format {fmt} cannot hold this network: its float32 weights take "
            f"{float_bytes / 2**30:.2f} GiB, and one {runtimes.EXTENSIONS[fmt]} file holds "
            f"less than {(MAX_MODEL_BYTES + 1) / 2**30:.0f} GiB; use --format saved_model.")


def export_portable(model: keras.Model, output_base: str, model_name: str, fmt: str,
                    options: signatures.SignatureOptions, quantize: str = "none",
                    calibration: Optional[CalibrationImages] = None, overwrite: bool = False,
                    description: Optional[Dict] = None,
                    fold_batch_norms: Optional[bool] = None) -> PortableResult:
    """Exports `model` as one checked `.tflite` or `.onnx` file with its metadata.

    Args:
      model: a Keras PolyNet with the top (fixed input size).
      output_base: the folder (any URI).
      model_name: the file's name without ending.
      fmt: "litert" or "onnx".
      options: the input contract, class names and `model_outputs` (logits
        get a softmax).
      quantize: "none", "float16" (LiteRT) or "int8".
      calibration: images from the training shards (needed for int8; their
        held-out part measures the quantized model's agreement).
      overwrite: replace an existing file.
      description: extra metadata entries (architecture, source).
      fold_batch_norms: as `export_saved_model`'s.

    Returns:
      A `PortableResult`.

    Raises:
      ValueError: bad names or options, or a network the format cannot hold.
      FileExistsError: the file exists and `overwrite` is False.
      ExportError: converting or checking failed; nothing was written.
    """
    exporter._check_names(output_base, model_name, None)  # pylint: disable=protected-access
    check_request(model, fmt, quantize, calibration is not None)
    path = output_path(output_base, model_name, fmt, quantize)
    if fileio.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists; pass --overwrite to replace it.")
    served = _with_probabilities(exporter.served_model(model, fold_batch_norms),
                                 options.model_outputs)
    metadata = {
        **exporter.model_metadata(model_name, options),
        "model_format": fmt, "quantization": quantize, "file": fileio.basename(path),
        "input": {"shape": [None, *served.input_shape[1:]], "dtype": "float32",
                  "preprocessing": "the input_contract's crop, then (x / 255 - mean) / std"},
        "output": "probabilities",
        "batch_norms_folded": folding.is_folded(served), **(description or {}),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="polynet_export-") as scratch:
            content, checks = _convert_and_check(model, served, fmt, quantize, calibration,
                                                 options, scratch)
            content = runtimes.embed_metadata(content, fmt, metadata)
            _check_runs(content, fmt, served)
        if quantize != "none":  # the file as written, its metadata included
            checks[quantize].update(bytes=len(content),
                                    size_ratio=len(content) / checks["float32_bytes"])
        metadata["checks"] = checks
        metadata_file = runtimes.metadata_path(path)
        fileio.write_json(metadata_file, metadata)
        try:
            fileio.atomic_write_bytes(path, content)
        except BaseException:
            fileio.remove_tree(metadata_file)
            raise
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise exporter.ExportError(
            f"Exporting {model_name!r} as {fmt} ({quantize}) failed, nothing was written: "
            f"{type(error).__name__}: {exporter._first_lines(error)}") from error  # noqa: SLF001
    return PortableResult(path, metadata_file, metadata)


def describe_checks(checks: Dict) -> list:
    """Report lines for the `checks` of a `PortableResult`'s metadata."""
    lines = [f"float32 vs Keras on {values['images']} {kind} images: largest difference "
             f"{values['max_abs']:.2g}, mean {values['mean_abs']:.2g}"
             for kind, values in ((k[len("float32_"):], v) for k, v in checks.items()
                                  if k.startswith("float32_") and isinstance(v, dict))]
    for quantize in ("float16", "int8"):
        if quantize in checks:
            values = checks[quantize]
            lines.append(
                f"{quantize}: {values['bytes'] / 2**20:.2f} MiB, {values['size_ratio']:.2f}x the "
                f"float32 file ({checks['float32_bytes'] / 2**20:.2f} MiB); top-1 agreement with "
                f"the float model on {values['held_out_images']} "
                f"{values.get('agreement_images', 'held-out')} images: "
                f"{values['top1_agreement']:.2%}")
    return lines


def _with_probabilities(served, model_outputs):
    if model_outputs != "logits":
        return served
    inputs = keras.Input(served.input_shape[1:], name="images")
    outputs = keras.layers.Softmax(dtype="float32", name="probabilities")(served(inputs))
    return keras.Model(inputs, outputs, name=served.name)


def _expected(model, images, model_outputs):
    outputs = np.asarray(keras.ops.convert_to_numpy(model(images, training=False)), np.float32)
    if model_outputs == "logits":
        outputs = np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(outputs)))
    return outputs


def check_images(contract, calibration: Optional[CalibrationImages], seed: int = 0):
    """Random images and real ones (held-out shard images, or a synthetic photo) as model inputs.

    Returns:
      `{"random": array, "real": array}`, float32 `[n, size, size, 3]`.
    """
    size = contract.image_size
    rng = np.random.default_rng(seed)
    random = np.asarray(contract.normalize(
        rng.uniform(0, 255, (_RANDOM_IMAGES, size, size, 3)).astype(np.float32)))
    if calibration is not None and len(calibration.held_out):
        real = calibration.held_out[:_REAL_IMAGES]
    elif calibration is not None:
        real = calibration.calibration[:_REAL_IMAGES]
    else:
        picture = warmup.synthetic_image(size + 37, size + 61)
        import tensorflow as tf  # noqa: PLC0415

        real = contract.preprocess(tf.io.encode_png(picture))[None].numpy()
    return {"random": random.astype(np.float32), "real": np.asarray(real, np.float32)}


def _convert_and_check(model, served, fmt, quantize, calibration, options, scratch):
    """The file's bytes and its check figures; raises ValueError when a float file differs."""
    float_content = convert_model(served, fmt, "none", None, scratch)
    images = check_images(options.contract, calibration)
    float_runner = _runner(float_content, fmt)
    checks = {"float32_bytes": len(float_content)}
    for kind, batch in images.items():
        expected = _expected(model, batch, options.model_outputs)
        difference = np.abs(float_runner(batch) - expected)
        checks[f"float32_{kind}"] = {"images": len(batch), "max_abs": float(difference.max()),
                                     "mean_abs": float(difference.mean())}
        if not (difference.max() <= MAX_ABS_DIFFERENCE
                and difference.mean() <= MEAN_ABS_DIFFERENCE):
            raise ValueError(
                f"the {fmt} file's probabilities differ from the Keras model's on {kind} images "
                f"by {difference.max():.3g} (largest) / {difference.mean():.3g} (mean); allowed "
                f"{MAX_ABS_DIFFERENCE} / {MEAN_ABS_DIFFERENCE}.")
    if quantize == "none":
        return float_content, checks
    content = convert_model(served, fmt, quantize, calibration, scratch)
    has_held_out = calibration is not None and len(calibration.held_out) > 0
    held_out = calibration.held_out if has_held_out else images["real"]
    expected = _expected(model, held_out, options.model_outputs)
    quantized = _runner(content, fmt)(held_out)
    checks[quantize] = {
        "bytes": len(content), "size_ratio": len(content) / len(float_content),
        "held_out_images": len(held_out),
        # Without held-out images (--held_out_images 0): the float check's real images.
        "agreement_images": "held-out" if has_held_out else "check",
        "top1_agreement": float(np.mean(quantized.argmax(-1) == expected.argmax(-1))),
        "max_abs": float(np.abs(quantized - expected).max()),
    }
    return content, checks


def _runner(content, fmt):
    return (runtimes.LiteRTModel if fmt == "litert" else runtimes.OnnxModel)(content)


def _check_runs(content, fmt, served):
    """The final bytes (metadata inside) load and give probabilities of the right shape."""
    size = served.input_shape[1]
    outputs = _runner(content, fmt)(np.zeros((2, size, size, 3), np.float32))
    if outputs.shape != (2, served.output_shape[-1]) or not np.all(np.isfinite(outputs)):
        raise ValueError(f"the {fmt} file gives outputs of shape {outputs.shape} (finite: "
                         f"{bool(np.all(np.isfinite(outputs)))}); expected (2, "
                         f"{served.output_shape[-1]}).")


def convert_model(served: keras.Model, fmt: str, quantize: str,
                  calibration: Optional[CalibrationImages], scratch: str) -> bytes:
    """The model file's bytes, unchecked and without metadata (`export_portable` adds both).

    Args:
      served: the network to convert (already folded, returning probabilities).
      fmt: "litert" or "onnx".
      quantize: "none", "float16" (LiteRT) or "int8".
      calibration: its `calibration` images calibrate int8.
      scratch: a local folder for the converters' files (ONNX int8 reuses the
        float32 file converted there before).

    Returns:
      The file's bytes.
    """
    path = os.path.join(scratch, f"model_{quantize}{runtimes.EXTENSIONS[fmt]}")
    # Keras's ONNX export takes only a model that has been called (its input signature).
    size = served.input_shape[1]
    served(np.zeros((1, size, size, 3), np.float32), training=False)
    if fmt == "litert":
        served.export(path, format="litert", verbose=False,
                      **_litert_settings(quantize, calibration))
    else:
        float_path = os.path.join(scratch, "model_float.onnx")
        if not os.path.exists(float_path):
            served.export(float_path, format="onnx", verbose=False)
        if quantize == "none":
            path = float_path
        else:
            _quantize_onnx(float_path, path, calibration, scratch)
    with open(path, "rb") as stream:  # the local scratch file
        return stream.read()


def _litert_settings(quantize, calibration):
    """TF LiteRT converter attributes for `quantize` (Keras passes them on)."""
    import tensorflow as tf  # noqa: PLC0415

    if quantize == "none":
        return {}
    if quantize == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_types": [tf.float16]}}

    def representative_dataset():
        for image in calibration.calibration:
            yield [image[None]]

    # Full integer: every op int8 (the converter fails rather than leave one in float);
    # the input and output stay float32 (quantized inside), as the contract describes.
    return {"optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative_dataset,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}


def _quantize_onnx(float_path, path, calibration, scratch):
    """ONNX Runtime static int8 quantization (QDQ, per-channel weights, MinMax ranges)."""
    from onnxruntime import quantization  # noqa: PLC0415

    prepared = os.path.join(scratch, "model_prepared.onnx")
    quantization.quant_pre_process(float_path, prepared, skip_symbolic_shape=True)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self, name):
            self._batches = iter([{name: image[None]} for image in calibration.calibration])

        def get_next(self):
            return next(self._batches, None)

    import onnx  # noqa: PLC0415

    input_name = onnx.load(prepared, load_external_data=False).graph.input[0].name
    quantization.quantize_static(
        prepared, path, Reader(input_name), quant_format=quantization.QuantFormat.QDQ,
        per_channel=True, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8)
