"""How new paths start, and what becomes of path gates.

function_preserving (beyond the paper): every new path must start at exactly
0 and every retained path must keep its term gate * beta * h, so that the
grown network computes what the small one did, at inference and in training
(batch statistics included). A new path whose block application no retained
path uses has its projection BatchNorm gamma and beta set to 0: its output
is exactly 0 whatever the statistics, and the rest of its chain sees
ReLU(0) = 0. A new path that reuses a retained block (the F^2, F^3 terms of
a fully shared poly-k) has no weight of its own; its path gate is set to 0,
so those targets must be built with `path_gates=True`. An inserted module
whose paths all start at 0 computes ReLU(x) = x, since every module input
in PolyNet is non-negative (it follows a ReLU or a max pool of ReLUs).
"""

import math

import keras
import numpy as np

from polynet_tf.grow import structure
from polynet_tf.grow.errors import GrowthError
from polynet_tf.grow.plan_types import COPIED, SET, ZEROED


def copy_gates(source, target, mapped, entries):
    """Paper mode: the gates of retained paths keep their source values.

    Args:
        source: the source module, or None for an inserted module.
        target: the target module.
        mapped: {target path index: source `Path`} of the retained paths.
        entries: {id(target weight): WeightPlan}, updated in place.
    """
    if target.gates is None or source is None or source.gates is None or not mapped:
        return
    source_gates = keras.ops.convert_to_numpy(source.gates)
    values = np.array(keras.ops.convert_to_numpy(target.gates))
    for t_index, s_path in mapped.items():
        values[t_index] = source_gates[s_path.index]
    entry = entries[id(target.gates)]
    if len(mapped) == len(values) == len(source_gates) and all(
            t == s.index for t, s in mapped.items()):
        entry.action, entry.source = COPIED, source.gates
    else:
        entry.action, entry.value = SET, values
        entry.note = "retained paths keep their source gates; new paths keep 1"


def preserve_function(source, target, mapped, plan, entries):
    """function_preserving: new paths start at 0, retained terms unchanged.

    Args:
        source: the source module, or None for an inserted module.
        target: the target module.
        mapped: {target path index: source `Path`} of the retained paths.
        plan: the module's `ModulePlan`; `new` gets how each new path starts.
        entries: {id(target weight): WeightPlan}, updated in place.

    Raises:
        GrowthError: a source path is dropped, a new path needs a gate the
            target lacks, or a residual-scale change needs gates.
    """
    if plan.dropped:
        raise GrowthError(
            target.name,
            f"{plan.dropped[0]} of `{source.name}` ({source.spec}) has no counterpart in "
            f"`{target.name}` ({target.spec}); function-preserving growth can only add "
            "paths (mode='paper' drops it).",
        )
    target_paths = structure.module_paths(target)
    retained_slots = {target_paths[i].slot for i in mapped}
    source_gates = None
    if source is not None and source.gates is not None:
        source_gates = keras.ops.convert_to_numpy(source.gates)
    gates = None if target.gates is None else np.ones(target.num_paths, "float32")
    for t_index, s_path in mapped.items():
        # The term is gate * beta * h: keep source_gate * source_beta.
        source_gate = 1.0 if source_gates is None else float(source_gates[s_path.index])
        factor = source_gate * source.residual_scale / target.residual_scale
        if gates is not None:
            gates[t_index] = factor
        elif not math.isclose(factor, 1.0, rel_tol=1e-6):
            raise GrowthError(
                target.name,
                f"its retained {structure.describe_path(target, target_paths[t_index])} is "
                f"scaled by {target.residual_scale} in the target but by "
                f"{source.residual_scale * source_gate} in the source; "
                "pass the same `residual_scale` to both networks, or build the target "
                "with path_gates=True so that the gate absorbs the ratio.",
            )
    for path in target_paths:
        if path.index in mapped:
            continue
        name = structure.describe_path(target, path)
        if path.slot not in retained_slots:
            norm = structure.projection_norm(target, path.slot)
            for weight in (norm.gamma, norm.beta):
                entry = entries[id(weight)]
                entry.action, entry.value = ZEROED, np.zeros(weight.shape, "float32")
                entry.note = f"{name} starts at 0"
            plan.new.append(f"{name}: new, projection BatchNorm gamma = beta = 0")
        elif gates is not None:
            gates[path.index] = 0.0
            plan.new.append(f"{name}: reuses a retained block, path gate = 0")
        else:
            raise GrowthError(
                target.name,
                f"its new {name} ({target.spec}) reuses the block of a retained path, so "
                "no weight of its own can make it start at 0; build the target with "
                "path_gates=True (PolyNet(..., path_gates=True), or --path_gates).",
            )
    if gates is not None and (mapped or not np.all(gates == 1.0)):
        entry = entries[id(target.gates)]
        entry.action, entry.value = SET, gates
        entry.note = ("retained paths: source gate x source beta / target beta; "
                      "new paths that reuse a retained block: 0")
