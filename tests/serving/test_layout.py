"""Version directories: next free version, no overwrite, no partial directory on failure;
the warm-up requests and the metadata file."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.models import fold_batch_norms
from polynet_tf.serving import exporter, warmup
from polynet_tf.data import InputContract
from tests.serving.conftest import (
    CLASS_NAMES,
    CROP_SIZE,
    MEAN,
    STD,
    random_image,
    signature_options,
)

# Exports a network (module fixture) and loads it back several times.
pytestmark = pytest.mark.slow


def _entries(path):
    return sorted(os.listdir(path))


def test_metadata_describes_the_export(exported):
    metadata = exporter.read_metadata(exported[2])
    assert metadata["format"] == "polynet_tf.export"
    assert metadata["model_name"] == "tiny" and metadata["model_version"] == 1
    assert metadata["class_names"] == CLASS_NAMES and metadata["top_k"] == 3
    assert metadata["format_version"] == 2
    contract = InputContract.from_dict(metadata["input_contract"])
    assert contract == InputContract("single", CROP_SIZE, mean=MEAN, std=STD)
    assert metadata["crop"] == contract.crop_protocol().to_dict()
    assert metadata["crop"]["crop_size"] == CROP_SIZE
    assert metadata["multicrop"]["num_crops"] == 72
    assert metadata["architecture"].startswith("A: 2way")
    assert {"polynet_tf", "tensorflow", "keras"} <= set(metadata["versions"])
    assert "serving_multicrop" in metadata["signatures"]


def test_warmup_requests_are_prediction_logs_for_each_signature(exported):
    requests = warmup.read_warmup_requests(exported[2])
    names = [r.model_spec.signature_name for r in requests]
    assert names == ["serving_default", "serve_images", "serve_images_uint8", "serve_crops",
                     "serve_examples"]
    assert all(r.model_spec.name == "tiny" for r in requests)
    loaded = tf.saved_model.load(exported[2])
    # One copy of the (folded) weights, shared by every signature.
    assert len(loaded.variables) == len(fold_batch_norms(exported[0]).variables)
    for request in requests:
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = warmup.request_inputs(request)
        expected = signature.structured_input_signature[1]
        assert set(inputs) == set(expected)
        for name, value in inputs.items():
            assert tf.as_dtype(expected[name].dtype).as_numpy_dtype == value.dtype or (
                expected[name].dtype == tf.string and value.dtype == object)
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        assert outputs["probabilities"].shape == (1, len(CLASS_NAMES))


def test_the_saved_model_holds_one_copy_of_the_network(exported):
    # Every signature (and each multi-crop scale) calls one traced function.
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(exported[2], "saved_model.pb"), "rb") as handle:
        saved.ParseFromString(handle.read())
    library = saved.meta_graphs[0].graph_def.library
    convolutions = [sum(node.op == "Conv2D" for node in function.node_def)
                    for function in library.function]
    model = exported[0]
    network = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([None, CROP_SIZE, CROP_SIZE, 3], tf.float32))
    once = sum(op.type == "Conv2D" for op in network.graph.get_operations())
    assert once > 50
    assert [c for c in convolutions if c] == [once]


def test_versions_are_never_overwritten_and_failures_leave_nothing(exported, tmp_path):
    model = exported[0]
    options = signature_options(multicrop=False)
    base = str(tmp_path)
    first = exporter.export_saved_model(model, base, "m", options, verify=False)
    assert first.version == 1 and _entries(tmp_path / "m") == ["1"]
    stamp = os.path.getmtime(os.path.join(first.path, "saved_model.pb"))

    with pytest.raises(FileExistsError, match="--overwrite"):
        exporter.export_saved_model(model, base, "m", options, version=1, verify=False)
    assert os.path.getmtime(os.path.join(first.path, "saved_model.pb")) == stamp

    # A warm-up image that is not an image fails only when the written model
    # is checked: everything is written by then, and all of it must go.
    with pytest.raises(exporter.ExportError, match="not an encoded") as failure:
        exporter.export_saved_model(model, base, "m", options,
                                    warmup_images=[b"GIF? no, plain text"])
    assert isinstance(failure.value.__cause__, tf.errors.InvalidArgumentError)
    assert _entries(tmp_path / "m") == ["1"]

    second = exporter.export_saved_model(model, base, "m", options, version=5, verify=False)
    assert second.version == 5 and exporter.next_version(str(tmp_path / "m")) == 6

    # A mismatch found late (class names vs classes) is checked before anything is written.
    bad = signature_options(multicrop=False)
    bad.class_names = CLASS_NAMES[:-1]
    with pytest.raises(ValueError, match="class names"):
        exporter.export_saved_model(model, base, "m", bad)
    assert _entries(tmp_path / "m") == ["1", "5"]

    replaced = exporter.export_saved_model(model, base, "m", signature_options(False, top_k=2),
                                           version=1, overwrite=True, verify=False)
    assert exporter.read_metadata(replaced.path)["top_k"] == 2
    assert _entries(tmp_path / "m") == ["1", "5"]


@pytest.mark.parametrize("kwargs, message", [
    ({"model_name": "a/b"}, "model_name"),
    ({"version": 0}, "version"),
    ({"output_base": ""}, "output_base"),
])
def test_bad_names_are_refused(exported, tmp_path, kwargs, message):
    arguments = {"output_base": str(tmp_path), "model_name": "m", **kwargs}
    with pytest.raises(ValueError, match=message):
        exporter.export_saved_model(exported[0], options=signature_options(False), **arguments)
    assert not (tmp_path / "m").exists()


def test_top_k_and_crop_size_must_fit_the_model(exported):
    from polynet_tf.serving import signatures

    options = signature_options(multicrop=False, top_k=len(CLASS_NAMES) + 1)
    with pytest.raises(ValueError, match="top_k"):
        signatures.validate_options(exported[0], options)
    options = signature_options(multicrop=False)
    options.contract = dataclasses.replace(options.contract, image_size=CROP_SIZE + 1)
    with pytest.raises(ValueError, match="crop"):
        signatures.validate_options(exported[0], options)


def test_synthetic_warmup_image_is_deterministic():
    np.testing.assert_array_equal(warmup.synthetic_image(20, 30), warmup.synthetic_image(20, 30))


def test_the_default_export_folds_the_batch_norms_and_serves_the_same_probabilities(
        exported, tmp_path):
    model, _, path = exported  # exported with the default fold_batch_norms=None
    assert exporter.read_metadata(path)["batch_norms_folded"] is True
    loaded = tf.saved_model.load(path)
    # The served graph has no BatchNorms left (the check after writing
    # compared it with the unfolded Keras model).
    assert not any("moving_" in v.name for v in loaded.variables)
    options = signature_options(multicrop=False)
    plain = exporter.export_saved_model(model, str(tmp_path), "plain", options,
                                        fold_batch_norms=False, verify=False)
    assert plain.metadata["batch_norms_folded"] is False
    unfolded = tf.saved_model.load(plain.path)
    assert any("moving_" in v.name for v in unfolded.variables)
    images = tf.constant(np.stack([random_image(90, 120, seed) for seed in range(3)]), tf.float32)
    served = loaded.signatures["serve_images"](images=images)["probabilities"]
    expected = unfolded.signatures["serve_images"](images=images)["probabilities"]
    np.testing.assert_allclose(served.numpy(), expected.numpy(), atol=1e-5)


def test_an_already_folded_model_is_exported_as_it_is_unless_folding_is_demanded(
        exported, tmp_path):
    folded = fold_batch_norms(exported[0])
    options = signature_options(multicrop=False)
    result = exporter.export_saved_model(folded, str(tmp_path), "folded", options, verify=False)
    assert result.metadata["batch_norms_folded"] is True
    with pytest.raises(ValueError, match="already folded.*--nofold_batch_norms"):
        exporter.export_saved_model(folded, str(tmp_path), "again", options,
                                    fold_batch_norms=True)
    assert sorted(os.listdir(tmp_path)) == ["folded"]


class _Wrapped(keras.Model):
    """A subclassed model around a PolyNet: no config, so `fold_batch_norms` cannot copy it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, inputs):
        return self.inner(inputs)


def test_a_model_folding_cannot_copy_is_served_as_it_is_unless_folding_is_demanded(
        exported, caplog):
    wrapped = _Wrapped(exported[0])
    assert exporter.served_model(wrapped, None) is wrapped
    assert "cannot fold" in caplog.text and "NotImplementedError" in caplog.text
    assert exporter.served_model(wrapped, False) is wrapped
    with pytest.raises(ValueError, match="cannot fold .*--nofold_batch_norms"):
        exporter.served_model(wrapped, True)


def _whole_versions(model_dir):
    return [name for name in os.listdir(model_dir) if name.isdigit() and os.path.isfile(
        os.path.join(model_dir, name, "saved_model.pb")) and os.path.isdir(
        os.path.join(model_dir, name, "variables"))]


def test_overwrite_never_leaves_the_model_without_a_whole_version(exported, tmp_path,
                                                                  monkeypatch):
    model = exported[0]
    model_dir = str(tmp_path / "m")
    exporter.export_saved_model(model, str(tmp_path), "m", signature_options(False),
                                verify=False)
    seen = []
    # Observe the directory after every rename and deletion the replacement makes.
    for name in ("rename", "rmtree", "remove"):
        original = getattr(tf.io.gfile, name)

        def observed(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            seen.append(_whole_versions(model_dir))
            return result

        monkeypatch.setattr(tf.io.gfile, name, observed)
    replaced = exporter.export_saved_model(model, str(tmp_path), "m",
                                           signature_options(False, top_k=2), version=1,
                                           overwrite=True, verify=False)
    monkeypatch.undo()
    assert len(seen) >= 3 and all(seen), seen  # the staged "2" while "1" is swapped
    assert any(versions == ["2"] for versions in seen)
    assert _entries(model_dir) == ["1"] and replaced.version == 1
    assert exporter.read_metadata(replaced.path)["top_k"] == 2


def test_kit_batching_agrees_with_the_signatures(exported, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    kit = os.path.join(root, "export")
    parameters = open(os.path.join(kit, "batching_parameters.txt")).read()
    assert "pad_variable_length_inputs: false" in parameters
    for name in ("docker_run.sh", "docker-compose.yml"):
        assert "--enable_batching=true" in open(os.path.join(kit, name)).read()
    assert "--novariable_size_signatures" in open(os.path.join(kit, "README.md")).read()
    options = signature_options(multicrop=True)
    options.variable_size_signatures = False
    result = exporter.export_saved_model(exported[0], str(tmp_path), "polynet", options)
    assert exporter.read_metadata(result.path)["batchable"] is True
    loaded = tf.saved_model.load(result.path)
    assert sorted(loaded.signatures) == sorted(result.signatures)
    for name, function in loaded.signatures.items():
        for spec in function.structured_input_signature[1].values():
            assert spec.shape[0] is None and None not in spec.shape[1:], (name, spec)
    # The default export has signatures of any image size: the kit's script refuses it.
    assert exporter.read_metadata(exported[2])["batchable"] is False
    import subprocess  # noqa: PLC0415
    for base, status in ((os.path.dirname(os.path.dirname(exported[2])), 2),):
        refused = subprocess.run(["bash", os.path.join(kit, "docker_run.sh"), base],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == status and "novariable_size_signatures" in refused.stderr
