"""`grow_model`: initialization by insertion between two built Keras models."""

from polynet_tf.grow.plan import plan_growth
from polynet_tf.grow.report import GrowthReport


def grow_model(source_model, target_model, mode="paper", source_info=None, target_info=None):
    """Initializes `target_model` from the trained, smaller `source_model`, in place.

    The paper's initialization by insertion (section 4, Fig. 9): stem,
    reductions and head are copied; per stage, the source's modules keep their
    order and are spread evenly over the deeper target stage, new units between
    them (source module i goes to target module floor(i * n_target / n_source):
    i*m for m times deeper); inside a module, the source's blocks become the target's
    matching blocks (an `ir` unit's F becomes the first first-order block),
    the rest is new. Everything is validated before the first assignment.

    Args:
        source_model: a built PolyNet (e.g. `PolyNet("ir_3_6_3", ...)` with
            trained weights loaded).
        target_model: a built PolyNet with the same width, stem and classes,
            freshly initialized: new weights keep their initial values.
        mode: "paper" (new weights as initialized: Glorot uniform kernels,
            BatchNorm gamma 1, beta 0) or "function_preserving" (every new
            path starts at exactly 0, so the target computes what the source
            did; see `polynet_tf.grow.plan`).
        source_info: optional dict describing the source, for the report.
        target_info: optional dict describing the target, for the report.

    Returns:
        A `GrowthReport`: for every target weight, its source weight or "new".

    Raises:
        GrowthError: naming the first target layer or weight that cannot be
            mapped (different widths, stems or class counts, a target stage
            shallower than the source's, a path function_preserving mode cannot keep or start
            at zero); the target is then unchanged.
        ValueError: an unknown mode.
    """
    plan = plan_growth(source_model, target_model, mode)
    plan.apply()
    return GrowthReport.from_plan(plan, source_info, target_info)
