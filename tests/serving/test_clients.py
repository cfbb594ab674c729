"""The deployment kit's REST and gRPC clients build requests for the exported signatures,
and those requests, decoded the way TF Serving decodes them, give the same answers."""

import base64
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import free_ports
from tests.serving.conftest import encode, random_image

KIT = os.path.join(os.path.dirname(__file__), "..", "..", "export")
IMAGES = [encode(random_image(96, 80, 11), "JPEG"), encode(random_image(77, 130, 12), "PNG")]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(KIT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[2])


def _rest_instances_to_tensor(body):
    """TF Serving's row format for a one-input signature: {"b64": s} -> bytes."""
    values = [base64.b64decode(item["b64"]) if isinstance(item, dict) else item
              for item in body["instances"]]
    return tf.constant(values, dtype=tf.string)


def test_rest_json_fits_the_signature_and_gives_the_same_answer(loaded):
    rest = _load("rest_client")
    body = json.loads(json.dumps(rest.build_predict_json(IMAGES)))
    assert body["signature_name"] == "serving_default"
    signature = loaded.signatures[body["signature_name"]]
    (name, spec), = signature.structured_input_signature[1].items()
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    outputs = signature(**{name: _rest_instances_to_tensor(body)})
    direct = signature(images=tf.constant(IMAGES))
    np.testing.assert_array_equal(outputs["probabilities"], direct["probabilities"])
    # What the server answers in row format, and how the client prints it.
    answer = {"predictions": [
        {"labels": [v.decode() for v in outputs["labels"][i].numpy()],
         "scores": outputs["scores"][i].numpy().tolist()} for i in range(len(IMAGES))]}
    lines = rest.format_predictions(answer)
    assert len(lines) == 2 and lines[0].startswith("image 0: class_")
    assert rest.predict_url("http://h:8501/", "tiny", 3) == \
        "http://h:8501/v1/models/tiny/versions/3:predict"


def test_grpc_request_fits_the_signature_and_gives_the_same_answer(loaded):
    grpc_client = _load("grpc_client")
    request = grpc_client.build_predict_request(IMAGES, "tiny", version=1)
    assert request.model_spec.name == "tiny" and request.model_spec.version.value == 1
    signature = loaded.signatures[request.model_spec.signature_name]
    expected = signature.structured_input_signature[1]
    assert set(request.inputs) == set(expected)
    proto = request.inputs["images"]
    assert proto.dtype == expected["images"].dtype.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [len(IMAGES)]
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    direct = signature(images=tf.constant(IMAGES))
    np.testing.assert_array_equal(outputs["probabilities"], direct["probabilities"])
    lines = grpc_client.format_predictions({k: v.numpy() for k, v in outputs.items()})
    assert lines[1].startswith("image 1: class_")


def _free_port():
    return free_ports(1)[0]


@pytest.mark.parametrize("script, server", [
    ("rest_client.py", "http://127.0.0.1:{port}"),
    ("grpc_client.py", "127.0.0.1:{port}"),
])
def test_scripts_say_when_the_server_is_unreachable(tmp_path, script, server):
    image = tmp_path / "image.png"
    image.write_bytes(IMAGES[1])
    completed = subprocess.run(
        [sys.executable, os.path.join(KIT, script), "--server",
         server.format(port=_free_port()), "--timeout", "2", str(image)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "Cannot reach TF Serving" in completed.stderr
