"""The growth plan: for every target weight, where its value comes from.

Planning only reads the two models; `GrowthPlan.apply` is the only writer,
so every error is raised before a single target weight changes.

Rules (paper section 4, Fig. 9; DESIGN section 2):

* Stem, reductions and head are copied by layer name, weight by weight.
* Per stage, target module i takes source module i when both stages have the
  same depth; when the target is m times deeper (m >= 2), source module i
  goes to target module i*m (interleaved: the old units at 0, m, 2m, ...,
  new units between them). Other depths are an error.
* Within a module pair, chain c of the source is matched to chain c of the
  target and, in each chain, order o to order o, as long as both have them:
  the target's block application takes the source's whole application
  (branch convs, that application's BatchNorms, its projection). A chain
  stops at the first application whose weights were already given other
  values (e.g. the shared convs of a `poly3[convs]` block taken by F when G
  asks for them). So `ir` -> any module keeps F as its first first-order
  block; k-way -> k'-way (k' >= k) keeps the k blocks; a module of the same
  type is copied whole; source paths without a counterpart are dropped and
  reported (an error in function_preserving mode).
* Everything else is new and keeps the values the target was built with
  (Glorot uniform kernels, BatchNorm gamma 1, beta 0, mean 0, variance 1).
* function_preserving: every new path starts at exactly zero. A path whose
  block application is not used by any retained path gets its projection
  BatchNorm gamma and beta set to 0; a new path that reuses a retained
  block (the F^2, F^3 terms of a fully shared poly-k) gets its path gate set
  to 0, which needs a target built with `path_gates=True`. With gates, a
  retained path's gate also absorbs a change of residual scale.
"""

import dataclasses
import math
from typing import Optional

import keras
import numpy as np

from polynet_tf.grow import structure
from polynet_tf.grow.errors import GrowthError
from polynet_tf.layers import PolyInceptionModule

MODES = ("paper", "function_preserving")

# Actions of a target weight in the plan and the report.
COPIED = "copied"        # bit-identical copy of one source weight
NEW = "new"              # left as the target was initialized
ZEROED = "zeroed"        # new, set to 0 so that its path starts at 0
SET = "set"              # path gates: computed from the source (see note)


@dataclasses.dataclass
class WeightPlan:
    """Where one target weight's value comes from.

    Attributes:
        target: the target variable.
        source: the source variable (COPIED), else None.
        action: COPIED, NEW, ZEROED or SET.
        value: the value to assign for ZEROED and SET.
        note: why, for the report.
    """

    target: object
    source: Optional[object] = None
    action: str = NEW
    value: Optional[np.ndarray] = None
    note: str = ""


@dataclasses.dataclass
class ModulePlan:
    """How one target module was obtained (for the report).

    Attributes:
        target: target module name.
        target_spec: its module spec text.
        source: source module name, None for an inserted module.
        source_spec: its module spec text, None for an inserted module.
        retained: descriptions "target path <- source path".
        new: descriptions of the new paths and how they start.
        dropped: descriptions of source paths with no counterpart.
    """

    target: str
    target_spec: str
    source: Optional[str] = None
    source_spec: Optional[str] = None
    retained: list = dataclasses.field(default_factory=list)
    new: list = dataclasses.field(default_factory=list)
    dropped: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class GrowthPlan:
    """A validated plan; `apply` assigns it to the target model.

    Attributes:
        mode: "paper" or "function_preserving".
        weights: one `WeightPlan` per target weight, in `target.weights` order.
        modules: one `ModulePlan` per target PolyInception module.
        not_carried: paths of source weights that no target weight takes.
    """

    mode: str
    weights: list
    modules: list
    not_carried: list

    def apply(self):
        """Assigns every COPIED, ZEROED and SET weight of the target."""
        for entry in self.weights:
            if entry.action == COPIED:
                entry.target.assign(keras.ops.convert_to_numpy(entry.source))
            elif entry.action in (ZEROED, SET):
                entry.target.assign(entry.value)


def plan_growth(source_model, target_model, mode="paper"):
    """Maps every weight of `target_model` to a weight of `source_model` or "new".

    Args:
        source_model: a built PolyNet (the trained, smaller network).
        target_model: a built PolyNet of the same width, stem and classes.
        mode: "paper" or "function_preserving" (see module docstring).

    Returns:
        A `GrowthPlan` (nothing is assigned yet).

    Raises:
        GrowthError: naming the first target layer or weight that cannot be
            mapped, and why.
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    entries = {id(w): WeightPlan(target=w) for w in target_model.weights}
    source_layers = {layer.name: layer for layer in structure.weighted_layers(source_model)}
    source_stages = structure.stage_modules(source_model)
    target_stages = structure.stage_modules(target_model)
    alignments = {}
    modules = []
    for layer in target_model.layers:
        if isinstance(layer, PolyInceptionModule):
            stage = layer.block_type
            if stage not in alignments:
                alignments[stage] = _align_stage(
                    stage, source_stages.get(stage, []), target_stages[stage])
            source = alignments[stage][target_stages[stage].index(layer)]
            modules.append(_plan_module(source, layer, mode, entries))
        elif layer.weights:
            _plan_copied_layer(source_layers.get(layer.name), layer, entries)
    used = {id(e.source) for e in entries.values() if e.source is not None}
    not_carried = [w.path for w in source_model.weights if id(w) not in used]
    ordered = [entries[id(w)] for w in target_model.weights]
    return GrowthPlan(mode, ordered, modules, not_carried)


def _align_stage(stage, sources, targets):
    """{target index: source module or None} for one stage."""
    first = targets[0].name
    if not sources:
        raise GrowthError(first, f"the source has no stage {stage} modules.")
    n_source, n_target = len(sources), len(targets)
    if n_target == n_source:
        return dict(enumerate(sources))
    if n_target < n_source or n_target % n_source:
        raise GrowthError(
            first,
            f"stage {stage} has {n_source} modules in the source and {n_target} in the "
            "target; growth supports the same depth or an integer multiple of it (the "
            "old modules go at interleaved positions 0, m, 2m, ..., paper Fig. 9).",
        )
    ratio = n_target // n_source
    return {i: (sources[i // ratio] if i % ratio == 0 else None) for i in range(n_target)}


def _plan_copied_layer(source_layer, layer, entries):
    """Stem, reductions, head: every weight copied, same relative path and shape."""
    if source_layer is None:
        raise GrowthError(layer.name, "the source has no layer of this name with weights.")
    targets, sources = layer.weights, source_layer.weights
    for i, target in enumerate(targets):
        source = sources[i] if i < len(sources) else None
        if source is None or (structure.relative_path(source, source_layer)
                              != structure.relative_path(target, layer)):
            raise GrowthError(
                target.path,
                f"the source layer `{source_layer.name}` has a different structure "
                f"(its weight {i} is {source.path if source is not None else 'missing'}).",
            )
        _check_shapes(target, source, layer)
        entries[id(target)].source = source
        entries[id(target)].action = COPIED
    if len(sources) > len(targets):
        raise GrowthError(
            layer.name,
            f"the source layer has extra weights, first {sources[len(targets)].path}.",
        )


def _check_shapes(target, source, layer=None):
    if tuple(target.shape) == tuple(source.shape):
        return
    if isinstance(layer, keras.layers.Dense):
        reason = (
            f"the source classifies into {source.shape[-1]} classes and the target "
            f"into {target.shape[-1]}; build both with the same `classes`."
        )
    else:
        reason = (
            f"shape {tuple(target.shape)} in the target but {tuple(source.shape)} in the "
            f"source ({source.path}): the networks differ in width (`width_multiplier`) "
            "or in this layer's structure."
        )
    raise GrowthError(target.path, reason)


def _plan_module(source, target, mode, entries):
    """Plans one target module from its source module (None: inserted)."""
    plan = ModulePlan(target.name, str(target.spec),
                      source.name if source is not None else None,
                      str(source.spec) if source is not None else None)
    target_chains = structure.module_chains(target)
    source_chains = structure.module_chains(source) if source is not None else []
    pairs = {}  # id(target weight) -> source weight
    mapped = {}  # target path index -> source Path
    for t_chain, s_chain in zip(target_chains, source_chains):
        for t_path, s_path in zip(t_chain, s_chain):
            t_weights = structure.slot_weights(target, t_path.slot)
            s_weights = structure.slot_weights(source, s_path.slot)
            for t_weight, s_weight in zip(t_weights, s_weights):
                _check_shapes(t_weight, s_weight)
            # Already given other values (a shared part taken by another
            # block): this application, and the rest of the chain, are new.
            if any(pairs.get(id(t), s) is not s for t, s in zip(t_weights, s_weights)):
                break
            pairs.update((id(t), s) for t, s in zip(t_weights, s_weights))
            mapped[t_path.index] = s_path
    for t_id, s_weight in pairs.items():
        entries[t_id].source = s_weight
        entries[t_id].action = COPIED

    target_paths = structure.module_paths(target)
    source_paths = structure.module_paths(source) if source is not None else []
    kept = {s.index for s in mapped.values()}
    for s_path in source_paths:
        if s_path.index not in kept:
            plan.dropped.append(f"source {structure.describe_path(source, s_path)}")
    for t_index, s_path in mapped.items():
        plan.retained.append(
            f"{structure.describe_path(target, target_paths[t_index])} <- source "
            f"{structure.describe_path(source, s_path)}")
    if mode == "function_preserving":
        _preserve_function(source, target, mapped, plan, entries)
    else:
        _copy_gates(source, target, mapped, entries)
        for path in target_paths:
            if path.index not in mapped:
                plan.new.append(f"{structure.describe_path(target, path)}: new")
    return plan


def _copy_gates(source, target, mapped, entries):
    """Paper mode: gates of retained paths keep their source values."""
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


def _preserve_function(source, target, mapped, plan, entries):
    """function_preserving: new paths start at 0, retained ones unchanged."""
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
