"""TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`).

TF Serving replays these `PredictionLog` records when it loads a version, so
the first real request does not pay for graph optimisation and memory
allocation. The file is a TFRecord of `tensorflow_serving.apis.PredictionLog`
protos (needs the `[serving]` extra: `tensorflow-serving-api`).
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from polynet_tf import fileio

WARMUP_DIRNAME = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
# TF Serving reads at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000


def _apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "Writing TF Serving warm-up requests needs tensorflow-serving-api: "
            "pip install 'polynet-tf[serving]' (or export with warmup disabled).") from None
    return predict_pb2, prediction_log_pb2


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, deterministic uint8 RGB test picture (gradients plus noise)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = [x * np.ones_like(y), y * np.ones_like(x), 0.5 * (x + y)]
    image = np.stack(channels, axis=-1) * 200.0 + rng.uniform(0, 55, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def image_example(encoded_image: bytes) -> tf.train.Example:
    """A `tf.train.Example` holding only `image/encoded` (what `serve_examples` reads)."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded_image]))
    return tf.train.Example(features=tf.train.Features(feature={"image/encoded": feature}))


def make_predict_request(model_name: str, signature_name: str,
                         inputs: Dict[str, np.ndarray]):
    """A `PredictRequest` for one signature.

    Args:
      model_name: the served model's name.
      signature_name: the signature.
      inputs: input name -> array (bytes arrays for string inputs).

    Returns:
      A `tensorflow_serving.apis.predict_pb2.PredictRequest`.
    """
    predict_pb2, _ = _apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup_requests(saved_model_dir: str,
                          requests: Sequence[Tuple[str, Dict[str, np.ndarray]]],
                          model_name: str) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` into a SavedModel.

    Args:
      saved_model_dir: the version directory.
      requests: `(signature_name, inputs)` pairs.
      model_name: the served model's name (written into each request).

    Returns:
      The path written.

    Raises:
      ValueError: more requests than TF Serving reads.
    """
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ValueError(f"TF Serving reads at most {MAX_WARMUP_RECORDS} warm-up requests; "
                         f"received {len(requests)}.")
    _, prediction_log_pb2 = _apis()
    folder = fileio.join(saved_model_dir, WARMUP_DIRNAME)
    fileio.makedirs(folder)
    path = fileio.join(folder, WARMUP_FILENAME)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=make_predict_request(model_name, signature_name, inputs)))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str) -> List:
    """The `PredictRequest`s of a SavedModel's warm-up file, in order."""
    _, prediction_log_pb2 = _apis()
    path = fileio.join(saved_model_dir, WARMUP_DIRNAME, WARMUP_FILENAME)
    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        requests.append(log.predict_log.request)
    return requests


def request_inputs(request) -> Dict[str, np.ndarray]:
    """A `PredictRequest`'s inputs as NumPy arrays (`tf.make_ndarray`)."""
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
