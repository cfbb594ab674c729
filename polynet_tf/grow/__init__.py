"""Initialization by insertion: grow a trained PolyNet into a bigger one.

The paper (Zhang et al., CVPR 2017, section 4 and Fig. 9) trains its very deep
networks from trained smaller ones: a residual unit replaced by a
PolyInception module keeps its block F and gets new blocks; a stage of double
depth gets the old units at interleaved positions with new units between
them. `grow_model` does this between two built Keras models,
`initialize_from_checkpoint` fills a built model from a checkpoint (what
`train --init_from` calls), `grow` goes from file to file, and
`python -m polynet_tf.grow` is the command line. Mode
"function_preserving" (beyond the paper) starts every new path at exactly 0,
so the grown network computes what the small one did.

    from polynet_tf import PolyNet
    from polynet_tf.grow import grow_model, load_source_weights

    small = PolyNet("ir_3_6_3", classes=10)
    load_source_weights(small, "small.weights.h5")
    big = PolyNet("ir_6_12_6_mixed", classes=10, path_gates=True)
    report = grow_model(small, big, mode="function_preserving")
    print(report.to_text())
"""

from polynet_tf.grow.checkpoints import load_source_weights
from polynet_tf.grow.core import grow_model
from polynet_tf.grow.errors import GrowthError
from polynet_tf.grow.files import grow, report_paths
from polynet_tf.grow.initialize import initialize_from_checkpoint
from polynet_tf.grow.plan import plan_growth
from polynet_tf.grow.plan_types import MODES, GrowthPlan
from polynet_tf.grow.report import GrowthReport, WeightEntry

__all__ = [
    "MODES",
    "GrowthError",
    "GrowthPlan",
    "GrowthReport",
    "WeightEntry",
    "grow",
    "grow_model",
    "initialize_from_checkpoint",
    "load_source_weights",
    "plan_growth",
    "report_paths",
]
