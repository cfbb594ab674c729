"""Classifies image files through an exported SavedModel's `serving_default`.

    python -m polynet_tf.demo.predict --saved_model BASE/NAME/VERSION \\
        --image_dir DIR [--class_index OUT/class_index.json] [--show 8] \\
        [--page predictions.png] [--model_file BASE/NAME_int8.tflite]

`DIR` holds one sub-folder per class (as written by `polynet_tf.demo.digits`);
every image is sent as encoded bytes, exactly what TF Serving receives, and
the predicted class is compared with its folder. Prints the accuracy and the
first `--show` predictions; `--page` draws a page of images with their
predicted labels (wrong ones in red). `--model_file` classifies the same
files with a LiteRT or ONNX export (cut and normalised by its recorded
input contract) and prints its accuracy beside the SavedModel's. Every path may be a TensorFlow
filesystem URI (`gs://...`): files are read and written through `tf.io.gfile`.
"""

import io
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
from absl import flags

from polynet_tf import cli, fileio
from polynet_tf.figures import png_figure

_PAGE_IMAGES = 40


class Prediction(NamedTuple):
    """One classified file."""

    path: str
    true_class: str
    predicted_class: str
    probability: float


class PredictError(RuntimeError):
    """The model or the images cannot be used: the message says why."""


def list_labelled_images(image_dir: str):
    """Returns sorted `(path, class_name)` of `image_dir/<class>/<file>`.

    Raises:
        PredictError: if the folder has no class sub-folders with files.
    """
    if not fileio.isdir(image_dir):
        raise PredictError(f"--image_dir {image_dir!r} is not a folder.")
    items = []
    for name in fileio.listdir(image_dir):
        folder = fileio.join(image_dir, name)
        if name.startswith(".") or not fileio.isdir(folder):
            continue
        items += [(fileio.join(folder, f), name) for f in fileio.listdir(folder)
                  if not f.startswith(".")]
    if not items:
        raise PredictError(f"--image_dir {image_dir!r} has no images in class sub-folders "
                           "(DIR/<class>/<image>).")
    return items


def serving_function(saved_model_dir: str):
    """Loads a SavedModel; returns `(model, signature, bytes input name)`.

    Raises:
        PredictError: no `serving_default` signature or no string input.
    """
    import tensorflow as tf  # noqa: PLC0415

    if not fileio.isfile(fileio.join(saved_model_dir, "saved_model.pb")):
        raise PredictError(f"{saved_model_dir!r} holds no saved_model.pb: pass the version "
                           "folder written by python -m polynet_tf.export (BASE/NAME/VERSION).")
    loaded = tf.saved_model.load(saved_model_dir)
    if "serving_default" not in loaded.signatures:
        raise PredictError(f"{saved_model_dir!r} has no serving_default signature "
                           f"(it has {sorted(loaded.signatures)}).")
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    names = [name for name, spec in inputs.items() if spec.dtype == tf.string]
    if len(names) != 1:
        raise PredictError(f"serving_default must take one tensor of encoded images; its "
                           f"inputs are {dict((k, str(v)) for k, v in inputs.items())}.")
    return loaded, signature, names[0]


def class_probabilities(outputs) -> np.ndarray:
    """Picks the per-class probabilities out of a signature's output dict.

    `probabilities` (or another key naming them) wins; logits are put through
    a softmax. Top-k outputs (`scores`, `classes`) do not cover every class.
    """
    for key in sorted(outputs):
        if "prob" in key:
            return outputs[key].numpy()
    for key in sorted(outputs):
        if "logit" in key:
            logits = outputs[key].numpy()
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return shifted / shifted.sum(axis=-1, keepdims=True)
    raise PredictError(f"serving_default returns no probabilities or logits: "
                       f"outputs {sorted(outputs)}.")


def classify(saved_model_dir: str, items, class_names: Sequence[str],
             batch_size: int = 32) -> List[Prediction]:
    """Sends every file's bytes through `serving_default`.

    Args:
        saved_model_dir: the exported version folder.
        items: `(path, true class name)` pairs.
        class_names: class name of each output index.
        batch_size: files per request.

    Returns:
        One `Prediction` per item, in order.
    """
    import tensorflow as tf  # noqa: PLC0415

    _, signature, input_name = serving_function(saved_model_dir)
    return _predictions(
        items, class_names, batch_size,
        lambda encoded: class_probabilities(signature(**{input_name: tf.constant(encoded)})))


def classify_file(model_file: str, items, class_names: Sequence[str],
                  batch_size: int = 32) -> List[Prediction]:
    """Classifies every file with a `.tflite` or `.onnx` export in its runtime.

    The images are cut and normalised by the input contract recorded beside
    the file (`FILE.json`), as the SavedModel's `serving_default` does inside.

    Args:
        model_file: written by `python -m polynet_tf.export --format litert|onnx`.
        items: `(path, true class name)` pairs.
        class_names: class name of each output index.
        batch_size: files per call.

    Returns:
        One `Prediction` per item, in order.
    """
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf.data.input_contract import InputContract  # noqa: PLC0415
    from polynet_tf.serving import runtimes  # noqa: PLC0415

    if not fileio.isfile(model_file) or not fileio.isfile(runtimes.metadata_path(model_file)):
        raise PredictError(f"--model_file {model_file!r} and its metadata "
                           f"{runtimes.metadata_path(model_file)!r} must both exist.")
    contract = InputContract.from_dict(runtimes.read_metadata(model_file)["input_contract"])
    model = runtimes.load(model_file)
    return _predictions(items, class_names, batch_size, lambda encoded: model(np.stack(
        [contract.preprocess(tf.constant(data)).numpy() for data in encoded])))


def _predictions(items, class_names, batch_size, probabilities_of):
    predictions = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        probabilities = probabilities_of([fileio.read_bytes(path) for path, _ in batch])
        if probabilities.shape[-1] != len(class_names):
            raise PredictError(f"The model has {probabilities.shape[-1]} classes but the class "
                               f"index names {len(class_names)}.")
        for (path, true_class), row in zip(batch, probabilities):
            index = int(np.argmax(row))
            predictions.append(Prediction(path, true_class, class_names[index], float(row[index])))
    return predictions


def draw_page(predictions: Sequence[Prediction], output: str, count: int = _PAGE_IMAGES) -> str:
    """A grid of the first `count` images titled with their predicted class."""
    from PIL import Image  # noqa: PLC0415

    shown = list(predictions[:count])
    columns = 8
    rows = max(1, -(-len(shown) // columns))
    with png_figure(output, rows, columns, figsize=(columns * 1.3, rows * 1.5), dpi=100,
                    squeeze=False) as (figure, axes):
        for ax in axes.ravel():
            ax.axis("off")
        for ax, item in zip(axes.ravel(), shown):
            with Image.open(io.BytesIO(fileio.read_bytes(item.path))) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            correct = item.predicted_class == item.true_class
            ax.set_title(f"{item.predicted_class} ({item.probability:.2f})", fontsize=9,
                         color="black" if correct else "red")
        wrong = sum(p.predicted_class != p.true_class for p in shown)
        figure.suptitle(f"Predicted class (probability) of {len(shown)} held-out images; "
                        f"{wrong} wrong, in red", fontsize=10)
    return output


def balanced_sample(predictions: Sequence[Prediction], count: int,
                    mistakes_first: bool = False) -> List[Prediction]:
    """Up to `count` predictions taken from each true class in turn.

    Args:
        predictions: all predictions.
        count: how many to return.
        mistakes_first: include every wrong prediction (up to `count`) first.

    Returns:
        The chosen predictions, ordered by true class then file.
    """
    chosen = []
    if mistakes_first:
        chosen = [p for p in predictions if p.predicted_class != p.true_class][:count]
    by_class = {}
    for item in predictions:
        if item not in chosen:
            by_class.setdefault(item.true_class, []).append(item)
    queues = [by_class[name] for name in sorted(by_class)]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda p: (p.true_class, p.path))


def _class_names(class_index: Optional[str], items):
    if class_index:
        return list(fileio.read_json(class_index)["classes"])
    return sorted({name for _, name in items})


def _relative(path, folder):
    """`path` below `folder` (no os.path.relpath: it would make URIs local paths)."""
    return path[len(folder):].lstrip("/") if path.startswith(folder) else path


_PROG = "python -m polynet_tf.demo.predict"


FLAGS = flags.FlagValues()  # This command's flags (its own: commands share a process in tests).
flags.DEFINE_string("saved_model", None, "Exported BASE/NAME/VERSION folder.", flag_values=FLAGS)
flags.DEFINE_string("image_dir", None, "DIR/<class>/<image> to classify.", flag_values=FLAGS)
flags.DEFINE_string("class_index", None, "class_index.json of the training shards (default: "
                    "the sorted sub-folder names of --image_dir).", flag_values=FLAGS)
flags.DEFINE_integer("show", 8, "Predictions to print.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_string("page", None, "PNG page of images with predictions.", flag_values=FLAGS)
flags.DEFINE_string("model_file", None, "Also classify the images with this .tflite or .onnx "
                    "export (e.g. the int8 model) and print its accuracy beside the "
                    "SavedModel's.", flag_values=FLAGS)
flags.mark_flags_as_required(["saved_model", "image_dir"], flag_values=FLAGS)


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 done, 2 usage error or unusable input (named)."""
    from polynet_tf import cli  # noqa: PLC0415

    return cli.run(_PROG, __doc__, FLAGS, _run, argv, usage_errors=(PredictError,))


def _run(args) -> int:
    items = list_labelled_images(args.image_dir)
    predictions = classify(args.saved_model, items, _class_names(args.class_index, items))
    for item in balanced_sample(predictions, args.show):
        mark = "" if item.predicted_class == item.true_class else "   <- wrong"
        print(f"{_relative(item.path, args.image_dir)}: predicted {item.predicted_class} "
              f"(p={item.probability:.3f}), true {item.true_class}{mark}")
    wrong = [p for p in predictions if p.predicted_class != p.true_class]
    for item in wrong:
        print(f"mistake: {_relative(item.path, args.image_dir)} predicted "
              f"{item.predicted_class} (p={item.probability:.3f})")
    accuracy = 1 - len(wrong) / len(predictions)
    print(f"served model accuracy on {len(predictions)} held-out images: {accuracy:.4f}")
    if args.model_file:
        _compare_file(args.model_file, items, predictions, _class_names(args.class_index, items),
                      accuracy)
    if args.page:
        draw_page(balanced_sample(predictions, _PAGE_IMAGES, mistakes_first=True), args.page)
        print(f"wrote {args.page}")
    return 0


def _compare_file(model_file, items, predictions, class_names, accuracy):
    from polynet_tf.serving import runtimes  # noqa: PLC0415

    metadata = runtimes.read_metadata(model_file)
    name = f"{metadata['quantization']} {metadata['model_format']} model".replace("none ", "")
    others = classify_file(model_file, items, class_names)
    correct = np.mean([o.predicted_class == o.true_class for o in others])
    agreement = np.mean([o.predicted_class == p.predicted_class
                         for o, p in zip(others, predictions)])
    print(f"{name} accuracy on {len(others)} held-out images: {correct:.4f} (SavedModel: "
          f"{accuracy:.4f}); top-1 agreement with the SavedModel: {agreement:.4f}; "
          f"{fileio.basename(model_file)}: {len(fileio.read_bytes(model_file)) / 2**20:.2f} MiB")


if __name__ == "__main__":
    cli.app_run(main)
