"""`initialize_from_checkpoint`: grow an already built model from a checkpoint.

This is the entry point of `train --init_from`: the trainer builds its model
as usual, then fills it from a checkpoint of a smaller trained network
before its first step.
"""

import json

from polynet_tf.grow.checkpoints import load_source_weights
from polynet_tf.grow.core import grow_model
from polynet_tf.models import PolyNet, polyinception_modules, resolve_architecture


def initialize_from_checkpoint(
    model,
    checkpoint,
    from_architecture,
    mode="paper",
    source_path_gates=False,
    report_path=None,
    target_info=None,
    **model_options,
):
    """Initializes the built PolyNet `model` by insertion from a smaller one's checkpoint.

    The source network is built with `PolyNet(from_architecture,
    **model_options)`; the options must describe it as it was trained (at
    least `width_multiplier` and `classes` equal to the model's; the input
    size does not matter). Nothing in `model` changes when this raises.

    Args:
        model: the target, a built PolyNet (inside a distribution strategy's
            scope if it has one); new weights keep their initial values.
        checkpoint: `.weights.h5` or `.keras` file, TensorFlow checkpoint
            directory (latest checkpoint) or checkpoint prefix.
        from_architecture: preset name or stage spec of the source.
        mode: "paper" or "function_preserving" (see `grow_model`);
            function_preserving into fully shared poly-k modules needs a
            model built with `path_gates=True`.
        source_path_gates: the source was built with path gates.
        report_path: when given, the report is also written to
            `report_path + ".mapping.txt"` and `+ ".mapping.json"`.
        target_info: optional dict describing the target, for the report.
        **model_options: `PolyNet()` options of the source, e.g.
            width_multiplier, classes, residual_scale, bn_epsilon.

    Returns:
        The `GrowthReport`.

    Raises:
        GrowthError: the checkpoint does not fit the source architecture, or
            a layer of `model` cannot be mapped (it is named).
    """
    source = PolyNet(from_architecture, weights=None, path_gates=source_path_gates,
                     **model_options)
    read_from = load_source_weights(source, checkpoint)
    if target_info is None:
        target_info = {
            "model": model.name,
            "path_gates": any(m.path_gates for m in polyinception_modules(model)),
        }
    report = grow_model(
        source, model, mode,
        source_info=describe(from_architecture, source_path_gates, model_options,
                             checkpoint=read_from),
        target_info=target_info,
    )
    if report_path is not None:
        report.save(report_path)
    return report


def describe(architecture, path_gates, model_options, **extra):
    """A JSON-friendly description of a network, for reports."""
    _, spec = resolve_architecture(architecture)
    info = {"architecture": architecture, "spec": str(spec), "path_gates": bool(path_gates)}
    info["options"] = json.loads(json.dumps(model_options, default=str))
    info.update({k: v for k, v in extra.items() if v is not None})
    return info
