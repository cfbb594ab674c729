#!/usr/bin/env python3
"""Classify images with a PolyNet served by TensorFlow Serving, over REST.

    python export/rest_client.py --server http://localhost:8501 --model_name polynet \\
        cat.jpg dog.png

Sends `{"signature_name": ..., "instances": [{"b64": ...}, ...]}` to
`SERVER/v1/models/NAME[/versions/N]:predict` (the encoded files' bytes,
base64) and prints the top-k labels and scores of each image. Needs only the
Python standard library.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request

DEFAULT_SIGNATURE = "serving_default"


def build_predict_json(images, signature_name=DEFAULT_SIGNATURE):
    """The REST predict body for a batch of encoded images.

    Args:
      images: encoded JPEG/PNG files, as bytes.
      signature_name: `serving_default` or `serving_multicrop`.

    Returns:
      A dict ready for `json.dumps`: row format, one `{"b64": ...}` per image.
    """
    return {
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images],
    }


def predict_url(server, model_name, version=None):
    """`SERVER/v1/models/NAME[/versions/N]:predict`."""
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    return server.rstrip("/") + path + ":predict"


def predict(server, model_name, body, version=None, timeout=30.0):
    """POSTs a predict body; returns the decoded JSON answer.

    Raises:
      ConnectionError: the server cannot be reached.
      RuntimeError: the server answered with an error (its message included).
    """
    url = predict_url(server, model_name, version)
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise RuntimeError(f"TF Serving answered {error.code} at {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(
            f"Cannot reach TF Serving at {url} ({reason}). Is the server running and is "
            "--server its REST address (port 8501 by default)?") from None


def format_predictions(answer):
    """Lines `image i: label (score), ...` from a row-format answer."""
    lines = []
    for i, row in enumerate(answer.get("predictions", [])):
        pairs = ", ".join(f"{label} ({score:.3f})"
                          for label, score in zip(row["labels"], row["scores"]))
        lines.append(f"image {i}: {pairs}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://localhost:8501", help="REST address")
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
    body = build_predict_json(images, args.signature_name)
    try:
        answer = predict(args.server, args.model_name, body, args.version, args.timeout)
    except (ConnectionError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, line in zip(args.images, format_predictions(answer)):
        print(f"{path}: {line.split(': ', 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
