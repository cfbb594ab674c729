#!/usr/bin/env python3
"""Classify images with a PolyNet served by TensorFlow Serving, over gRPC.

    python export/grpc_client.py --server localhost:8500 --model_name polynet cat.jpg

Sends a `tensorflow_serving.apis.predict_pb2.PredictRequest` whose input
`images` is a string tensor `[batch]` of encoded JPEG/PNG files, and prints
the top-k labels and scores. Needs `pip install tensorflow-serving-api`
(which brings TensorFlow and grpcio).
"""

import argparse
import sys

DEFAULT_SIGNATURE = "serving_default"
INPUT_NAME = "images"


def build_predict_request(images, model_name, signature_name=DEFAULT_SIGNATURE, version=None):
    """The gRPC `PredictRequest` for a batch of encoded images.

    Args:
      images: encoded JPEG/PNG files, as bytes.
      model_name: the served model's name.
      signature_name: `serving_default` or `serving_multicrop`.
      version: a model version, or None for the latest.

    Returns:
      A `PredictRequest` with input `images`: string `[len(images)]`.
    """
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_NAME].CopyFrom(
        tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    return request


def predict(server, request, timeout=30.0):
    """Sends a `PredictRequest`; returns the outputs as NumPy arrays.

    Raises:
      ConnectionError: the server cannot be reached within `timeout`.
      RuntimeError: the server answered with an error (status and message).
    """
    import grpc  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

    channel = grpc.insecure_channel(server)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ConnectionError(
            f"Cannot reach TF Serving at {server} within {timeout:g} s. Is the server "
            "running and is --server its gRPC address (port 8500 by default)?") from None
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    except grpc.RpcError as error:
        raise RuntimeError(f"TF Serving answered {error.code().name}: {error.details()}") \
            from None
    finally:
        channel.close()
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def format_predictions(outputs):
    """Lines `image i: label (score), ...` from the outputs."""
    lines = []
    for i, (labels, scores) in enumerate(zip(outputs["labels"], outputs["scores"])):
        pairs = ", ".join(f"{label.decode('utf-8')} ({score:.3f})"
                          for label, score in zip(labels, scores))
        lines.append(f"image {i}: {pairs}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port")
    parser.add_argument("--model_name", default="polynet")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--signature_name", default=DEFAULT_SIGNATURE)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    args = parser.parse_args(argv)
    images = []
    for path in args.images:
        with open(path, "rb") as f:
            images.append(f.read())
    request = build_predict_request(images, args.model_name, args.signature_name, args.version)
    try:
        outputs = predict(args.server, request, args.timeout)
    except (ConnectionError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, line in zip(args.images, format_predictions(outputs)):
        print(f"{path}: {line.split(': ', 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
