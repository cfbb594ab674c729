"""Runs an exported LiteRT (`.tflite`) or ONNX (`.onnx`) PolyNet in its own runtime.

The runtimes are optional dependencies: `pip install polynet-tf[litert]` for
the LiteRT interpreter (`ai-edge-litert`, XNNPACK on CPUs), `polynet-tf[onnx]`
for ONNX Runtime. Both files take what the Keras model takes (float32
`[batch, size, size, 3]`, already cropped and normalised by the model's
`InputContract`, recorded beside the file) and return its class
probabilities, float32 `[batch, classes]`.
"""

import json
from typing import Optional

import numpy as np

from polynet_tf import fileio

FORMATS = ("litert", "onnx")
EXTENSIONS = {"litert": ".tflite", "onnx": ".onnx"}
# The pip extra and module each runtime needs.
_RUNTIMES = {"litert": ("litert", "ai_edge_litert"), "onnx": ("onnx", "onnxruntime")}
# The key of the polynet metadata (JSON) inside the file.
METADATA_KEY = "polynet_export"


class MissingRuntime(ImportError):
    """The runtime of a format is not installed."""


def require_runtime(fmt: str):
    """Imports the runtime module of `fmt` ("litert", "onnx").

    Raises:
      MissingRuntime: naming the pip extra to install.
    """
    extra, module = _RUNTIMES[fmt]
    try:
        return __import__(module)
    except ImportError as error:
        raise MissingRuntime(
            f"--format {fmt} needs the {module} package: pip install "
            f"'polynet-tf[{extra}]'.") from error


def format_of(path: str) -> str:
    """"litert" or "onnx" from the file name ending.

    Raises:
      ValueError: another ending.
    """
    for fmt, extension in EXTENSIONS.items():
        if str(path).endswith(extension):
            return fmt
    raise ValueError(f"{path!r} is neither a LiteRT ({EXTENSIONS['litert']}) nor an ONNX "
                     f"({EXTENSIONS['onnx']}) model file.")


class LiteRTModel:
    """A `.tflite` model in the LiteRT interpreter (XNNPACK on CPUs).

    Args:
      content: the file's bytes.
      num_threads: interpreter threads (None: the runtime's default).
    """

    def __init__(self, content: bytes, num_threads: Optional[int] = None):
        require_runtime("litert")
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of a float32 batch `[n, size, size, 3]`."""
        images = np.ascontiguousarray(images, dtype=self._input["dtype"])
        if self._batch != images.shape[0]:
            self._interpreter.resize_tensor_input(self._input["index"], images.shape)
            self._interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self._interpreter.set_tensor(self._input["index"], images)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]), dtype=np.float32)


class OnnxModel:
    """An `.onnx` model in ONNX Runtime (CPU execution provider).

    Args:
      content: the file's bytes.
      num_threads: intra-op threads (None: the runtime's default).
    """

    def __init__(self, content: bytes, num_threads: Optional[int] = None):
        onnxruntime = require_runtime("onnx")
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(content, options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of a float32 batch `[n, size, size, 3]`."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        return np.asarray(self._session.run(None, {self._input: images})[0], dtype=np.float32)


def load(path: str, num_threads: Optional[int] = None):
    """A callable `images -> probabilities` for the `.tflite` or `.onnx` file `path` (a URI)."""
    fmt = format_of(path)
    runner = LiteRTModel if fmt == "litert" else OnnxModel
    return runner(fileio.read_bytes(path), num_threads=num_threads)


def metadata_path(path: str) -> str:
    """Where the export's metadata JSON lies beside the model file (`FILE.json`)."""
    return f"{path}.json"


def read_metadata(path: str) -> dict:
    """The metadata written beside the model file `path`."""
    return fileio.read_json(metadata_path(path))


def embedded_metadata(content: bytes, fmt: str) -> Optional[dict]:
    """The metadata stored inside a model file's bytes (None if there is none).

    LiteRT: the flatbuffer's `metadata` entry named `METADATA_KEY`; ONNX: the
    model's `metadata_props` entry `METADATA_KEY`.
    """
    if fmt == "onnx":
        import onnx  # noqa: PLC0415

        props = {p.key: p.value for p in onnx.load_from_string(content).metadata_props}
        text = props.get(METADATA_KEY)
        return None if text is None else json.loads(text)
    from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415

    model = schema.Model.GetRootAs(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name().decode() == METADATA_KEY:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode("utf-8"))
    return None


def embed_metadata(content: bytes, fmt: str, metadata: dict) -> bytes:
    """`content` with `metadata` (JSON) stored inside (see `embedded_metadata`)."""
    text = json.dumps(metadata, sort_keys=True)
    if fmt == "onnx":
        import onnx  # noqa: PLC0415

        model = onnx.load_from_string(content)
        onnx.helper.set_model_props(
            model, {**{p.key: p.value for p in model.metadata_props}, METADATA_KEY: text})
        return model.SerializeToString()
    import flatbuffers  # noqa: PLC0415  (TensorFlow's dependency)
    from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(content) + len(text) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


__all__ = [
    "EXTENSIONS", "FORMATS", "LiteRTModel", "METADATA_KEY", "MissingRuntime", "OnnxModel",
    "embed_metadata", "embedded_metadata", "format_of", "load", "metadata_path",
    "read_metadata", "require_runtime",
]
