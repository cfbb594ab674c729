"""`python -m polynet_tf.export --format litert|onnx`: checked files, quantization, bad input.

The files run in their real runtimes (the LiteRT interpreter, ONNX Runtime);
a missing runtime skips here and fails under CI=true (tests/ci_dependencies.py).
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from polynet_tf import export
from polynet_tf.data import make_example, preprocess_for_eval, write_shard
from polynet_tf.serving import portable, runtimes
from tests.serving.conftest import encode, random_image
from tests.serving.test_cli import MEAN, STD, run  # noqa: F401  (the training-run fixture)

RUNTIME_MODULES = {"litert": "ai_edge_litert", "onnx": "onnxruntime"}
IMAGES = [encode(random_image(88, 131, 21), "PNG"), encode(random_image(75, 75, 5), "JPEG")]
CALIBRATION, HELD_OUT = 12, 12


def _needs_runtime(fmt):
    pytest.importorskip(RUNTIME_MODULES[fmt])
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    """Two training shards of scikit-learn digits (12 calibrate, 12 are held out)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    records = []
    for index in range(CALIBRATION + HELD_OUT):
        pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels).resize((80, 80), Image.BILINEAR).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        label = int(digits.target[index])
        records.append(make_example(buffer.getvalue(), label, str(label), 80, 80,
                                    f"{index}.jpg").SerializeToString())
    root = tmp_path_factory.mktemp("digits")
    write_shard(str(root / "train-00000-of-00002"), records[:CALIBRATION])
    write_shard(str(root / "train-00001-of-00002"), records[CALIBRATION:])
    return str(root / "train-*"), records


def _export(output, run_root, *arguments):
    return export.main(["--output_base", str(output), "--model_name", "pets",
                        "--checkpoint", str(run_root / "model_dir"), *arguments])


def _keras_probabilities(model, crops):
    return tf.nn.softmax(model(crops, training=False)).numpy()


def _crops(encoded_images):
    return tf.stack([preprocess_for_eval(tf.constant(data), 75, 1.0, mean=MEAN, std=STD)
                     for data in encoded_images]).numpy()


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_float32_export_matches_keras_in_its_runtime(run, tmp_path, capsys, fmt):  # noqa: F811
    _needs_runtime(fmt)
    root, model = run
    assert _export(tmp_path, root, "--format", fmt) == 0, capsys.readouterr().err
    path = str(tmp_path / f"pets{runtimes.EXTENSIONS[fmt]}")
    assert "float32 vs Keras on 3 random images" in capsys.readouterr().out
    # The file and its metadata, nothing else (no temporary left over).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"pets{runtimes.EXTENSIONS[fmt]}", f"pets{runtimes.EXTENSIONS[fmt]}.json"])

    # Independently of the export's own check: the runtime against Keras (logits -> softmax).
    crops = np.concatenate([_crops(IMAGES), np.random.default_rng(4).normal(
        0, 1, (2, 75, 75, 3)).astype(np.float32)])
    difference = np.abs(runtimes.load(path, num_threads=2)(crops)
                        - _keras_probabilities(model, crops))
    assert difference.max() <= 5e-5 and difference.mean() <= 1e-5, difference.max()

    metadata = runtimes.read_metadata(path)
    assert (metadata["format"], metadata["format_version"]) == ("polynet_tf.export", 2)
    assert (metadata["model_format"], metadata["quantization"]) == (fmt, "none")
    contract = metadata["input_contract"]
    assert (contract["image_size"], contract["mean"], contract["std"]) == (75, MEAN, STD)
    assert metadata["class_names"] == ["cat", "dog", "fox", "owl"]
    assert metadata["batch_norms_folded"] is True
    assert metadata["checks"]["float32_real"]["max_abs"] <= portable.MAX_ABS_DIFFERENCE
    with open(path, "rb") as stream:
        embedded = runtimes.embedded_metadata(stream.read(), fmt)
    assert embedded == {k: v for k, v in metadata.items() if k != "checks"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_int8_export_reports_what_it_measures(run, digit_shards, tmp_path, capsys,  # noqa: F811
                                              fmt):
    _needs_runtime(fmt)
    root, model = run
    pattern, records = digit_shards
    status = _export(tmp_path, root, "--format", fmt, "--quantize", "int8",
                     "--calibration_data", pattern, "--calibration_images", str(CALIBRATION),
                     "--held_out_images", str(HELD_OUT))
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    path = str(tmp_path / f"pets_int8{runtimes.EXTENSIONS[fmt]}")
    checks = runtimes.read_metadata(path)["checks"]
    # The reported figures are what the file does on the held-out records.
    held_out = _crops([tf.train.Example.FromString(r).features.feature["image/encoded"]
                       .bytes_list.value[0] for r in records[CALIBRATION:]])
    quantized = runtimes.load(path)(held_out)
    expected = _keras_probabilities(model, held_out)
    agreement = float(np.mean(quantized.argmax(-1) == expected.argmax(-1)))
    size = (tmp_path / f"pets_int8{runtimes.EXTENSIONS[fmt]}").stat().st_size
    assert checks["int8"]["held_out_images"] == HELD_OUT
    assert checks["int8"]["top1_agreement"] == pytest.approx(agreement)
    assert checks["int8"]["bytes"] == size
    assert checks["int8"]["size_ratio"] == pytest.approx(size / checks["float32_bytes"])
    assert f"top-1 agreement with the float model on {HELD_OUT} held-out images" in printed
    # Quantized, yet close to the float model: probabilities of 4 classes.
    assert np.abs(quantized - expected).max() < 0.1


@pytest.mark.slow
def test_int8_files_are_under_a_third_of_float32_where_weights_dominate(tmp_path):
    """The released networks' case: a wide network, where per-channel scales are negligible."""
    for module in ("ai_edge_litert", "onnxruntime", "tf2onnx"):
        pytest.importorskip(module)
    from polynet_tf import PolyNet
    from polynet_tf.serving.calibration import CalibrationImages
    from tests.serving.conftest import signature_options

    model = PolyNet("A: 2way | B: 2way | C: 2way", input_shape=(75, 75, 3), classes=10,
                    width_multiplier=0.5, dropout_rate=0.0, seed=3)
    options = signature_options(multicrop=False)
    images = np.asarray(options.contract.normalize(np.random.default_rng(1).uniform(
        0, 255, (8, 75, 75, 3)).astype(np.float32)))
    calibration = CalibrationImages("random", images[:6], images[6:])
    for fmt in ("litert", "onnx"):
        result = portable.export_portable(model, str(tmp_path), "wide", fmt, options,
                                          quantize="int8", calibration=calibration)
        assert result.metadata["checks"]["int8"]["size_ratio"] <= 0.3, result.metadata


@pytest.mark.slow
def test_float16_litert_halves_the_file_and_keeps_the_outputs(run, tmp_path, capsys):  # noqa: F811
    _needs_runtime("litert")
    root, model = run
    assert _export(tmp_path, root, "--format", "litert", "--quantize", "float16") == 0, (
        capsys.readouterr().err)
    path = str(tmp_path / "pets_float16.tflite")
    checks = runtimes.read_metadata(path)["checks"]
    assert 0.4 <= checks["float16"]["size_ratio"] <= 0.7, checks
    crops = _crops(IMAGES)
    difference = np.abs(runtimes.load(path)(crops) - _keras_probabilities(model, crops))
    assert difference.max() < 1e-3


@pytest.mark.parametrize("arguments, message", [
    (["--format", "tflite"], "--format"),
    (["--format", "litert", "--quantize", "int4"], "--quantize"),
    (["--format", "onnx", "--quantize", "float16"], "--quantize float16 is not available for "
                                                     "--format onnx"),
    (["--quantize", "int8"], "--quantize int8 applies to --format litert or onnx"),
    (["--format", "litert", "--quantize", "int8"], "--quantize int8 needs --calibration_data"),
    (["--format", "onnx", "--quantize", "int8", "--calibration_data", "/no/such/train-*"],
     "--calibration_data '/no/such/train-*' matches no file"),
    (["--format", "litert", "--calibration_data", "x-*"], "--calibration_data calibrates"),
    (["--format", "litert", "--version", "3"], "--version applies to --format saved_model"),
    (["--format", "onnx", "--multicrop", "polynet_multicrop"], "--multicrop applies"),
])
def test_bad_requests_exit_2_naming_the_flag_and_write_nothing(run, tmp_path, capsys,  # noqa: F811
                                                               arguments, message):
    root, _ = run
    output = tmp_path / "out"
    assert _export(output, root, *arguments) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not output.exists() or not list(output.iterdir())


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_a_network_the_format_cannot_hold_is_refused(run, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                     fmt):
    """Neither file holds 2 GiB; the check compares the weights' bytes with the limit."""
    _needs_runtime(fmt)
    root, model = run
    weight_bytes = 4 * sum(int(np.prod(w.shape)) for w in model.weights)
    monkeypatch.setattr(portable, "MAX_MODEL_BYTES", weight_bytes - 1)
    assert _export(tmp_path / "out", root, "--format", fmt) == 2
    error = capsys.readouterr().err
    assert f"--format {fmt} cannot hold this network" in error and "saved_model" in error
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(portable, "MAX_MODEL_BYTES", weight_bytes)
    portable.check_request(model, fmt, "none", has_calibration=False)  # exactly at the limit


def test_an_existing_file_needs_overwrite(run, tmp_path, capsys):  # noqa: F811
    _needs_runtime("onnx")
    root, _ = run
    (tmp_path / "pets.onnx").write_bytes(b"earlier")
    assert _export(tmp_path, root, "--format", "onnx") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "pets.onnx").read_bytes() == b"earlier"


def test_metadata_round_trips_inside_both_formats():
    """Embedding keeps the model: the LiteRT flatbuffer and the ONNX graph still load."""
    _needs_runtime("litert")
    _needs_runtime("onnx")
    import onnx

    metadata = {"format_version": 2, "input_contract": {"image_size": 3}}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])])
    content = runtimes.embed_metadata(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                               ir_version=8).SerializeToString(), "onnx", metadata)
    assert runtimes.embedded_metadata(content, "onnx") == metadata
    np.testing.assert_array_equal(runtimes.OnnxModel(content)(np.array([[-1, 0, 2]])),
                                  [[0, 0, 2]])

    function = tf.function(tf.nn.relu, input_signature=[tf.TensorSpec([1, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()])
    content = runtimes.embed_metadata(converter.convert(), "litert", metadata)
    assert runtimes.embedded_metadata(content, "litert") == metadata
    np.testing.assert_array_equal(runtimes.LiteRTModel(content)(np.array([[-1, 0, 2]])),
                                  [[0, 0, 2]])
