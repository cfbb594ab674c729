"""`grow`: from a checkpoint of a small PolyNet to a weights file of a bigger one."""

import os

import keras
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.grow.initialize import describe, initialize_from_checkpoint
from polynet_tf.grow.plan_types import MODES
from polynet_tf.grow.report import JSON_REPORT_SUFFIX, TEXT_REPORT_SUFFIX
from polynet_tf.models import PolyNet, resolve_architecture

WEIGHTS_SUFFIX = ".weights.h5"


def report_paths(output):
    """The (text, JSON) report paths written beside `output`."""
    output = os.fspath(output)
    return output + TEXT_REPORT_SUFFIX, output + JSON_REPORT_SUFFIX


def grow(
    from_architecture,
    from_checkpoint,
    to_architecture,
    output,
    mode="paper",
    path_gates=False,
    source_path_gates=False,
    init_seed=None,
    dry_run=False,
    verbose=True,
    **model_options,
):
    """Grows a trained PolyNet into a bigger one and writes its weights.

    Both networks are built with `PolyNet(architecture, **model_options)`
    (same `width_multiplier`, `classes`, `residual_scale`, ...), the source
    weights are loaded, `grow_model` maps them, and the target's weights are
    written to `output` (through a temporary file, then renamed; any
    TensorFlow filesystem URI such as `gs://...`) with the mapping report
    beside it: `output + ".mapping.txt"` (readable) and
    `output + ".mapping.json"` (machine-readable, including how to build the
    target). Nothing is written when anything fails.

    Args:
        from_architecture: preset name or stage spec of the source.
        from_checkpoint: `.weights.h5` or `.keras` file, TensorFlow checkpoint
            directory (latest checkpoint) or checkpoint prefix.
        to_architecture: preset name or stage spec of the target.
        output: path of the target weights, ending in ".weights.h5"; load it
            with `PolyNet(to_architecture, weights=output, **options)`, with
            `path_gates=True` if the target was grown with gates.
        mode: "paper" or "function_preserving" (see `grow_model`).
        path_gates: build the target with path gates (needed by
            function_preserving growth into fully shared poly-k modules).
        source_path_gates: the source was built with path gates.
        init_seed: seeds the initialization of the new weights (global Keras
            seed) when given.
        dry_run: plan and report only; write nothing.
        verbose: print the report.
        **model_options: passed to `PolyNet()` for both networks, e.g.
            width_multiplier, classes, input_shape, residual_scale.

    Returns:
        The `GrowthReport`.

    Raises:
        GrowthError: the checkpoint does not fit the source, or a target
            layer cannot be mapped (it is named); nothing is written.
        ValueError: bad `output` or `mode`, or invalid model options.
    """
    output = os.fspath(output)
    if not output.endswith(WEIGHTS_SUFFIX):
        raise ValueError(
            f"`output` must end in {WEIGHTS_SUFFIX!r} (a Keras weights file). "
            f"Received: output={output!r}"
        )
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    for name in ("weights", "path_gates"):
        if name in model_options:
            raise TypeError(f"`{name}` cannot be a model option of grow().")
    resolve_architecture(from_architecture)
    resolve_architecture(to_architecture)

    if init_seed is not None:
        keras.utils.set_random_seed(init_seed)
    target = PolyNet(to_architecture, weights=None, path_gates=path_gates, **model_options)
    report = initialize_from_checkpoint(
        target, from_checkpoint, from_architecture, mode=mode,
        source_path_gates=source_path_gates,
        target_info=describe(to_architecture, path_gates, model_options,
                             output=None if dry_run else output),
        **model_options,
    )
    if not dry_run:
        _write_atomically(target, report, output)
    if verbose:
        print(report.to_text(), end="")
        if not dry_run:
            print(f"wrote {output} and its report {report_paths(output)[0]}")
    return report


def _write_atomically(model, report, output):
    """Writes weights and reports under temporary names, then renames them.

    The weights file is saved first (locally when `output` is a URI: h5py
    needs a local file) and moved into place last, after its reports: a
    weights file that exists has its reports beside it, and any failure
    before that leaves nothing.
    """
    text_path, json_path = report_paths(output)
    with fileio.local_file_for_writing(output) as weights_path:
        model.save_weights(weights_path)
        with fileio.atomic_output(text_path) as text_temporary, \
                fileio.atomic_output(json_path) as json_temporary:
            for path, content in ((text_temporary, report.to_text()),
                                  (json_temporary, report.to_json())):
                with tf.io.gfile.GFile(path, "w") as stream:
                    stream.write(content)
