"""The growth plan: for every target weight, where its value comes from.

Planning only reads the two models; `GrowthPlan.apply` is the only writer,
so every error is raised before a single target weight changes.

Rules (paper section 4, Fig. 9):

* Stem, reductions and head are copied by layer name, weight by weight.
* Per stage, the source's modules keep their order and are spread evenly over
  the target's (`spread_positions`): the same depth maps module i to module
  i; a deeper target gets the old units at floor(i * n_target / n_source)
  (0, m, 2m, ... for an integer multiple m; 0, 3, 6 for 3 -> 10) with new
  units between them. A shallower target is an error.
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
* function_preserving: every new path starts at exactly zero (projection
  BatchNorm gamma = beta = 0, or a closed path gate); see
  `polynet_tf.grow.function_preserving`.
"""

import keras

from polynet_tf.grow import structure
from polynet_tf.grow.errors import GrowthError
from polynet_tf.grow.function_preserving import copy_gates, preserve_function
from polynet_tf.grow.plan_types import (
    COPIED,
    MODES,
    GrowthPlan,
    ModulePlan,
    WeightPlan,
)
from polynet_tf.layers import PolyInceptionModule


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
    if n_target < n_source:
        raise GrowthError(
            first,
            f"stage {stage} has {n_source} modules in the source and {n_target} in the "
            "target; growth cannot remove modules: build a target at least as deep as "
            "the source in every stage.",
        )
    positions = spread_positions(n_source, n_target)
    alignment = dict.fromkeys(range(n_target))
    alignment.update(zip(positions, sources))
    return alignment


def spread_positions(n_source, n_target):
    """Target positions of the old modules when a stage grows from n_source to n_target.

    The old modules keep their order and are spread evenly, with the new ones
    between them (paper Fig. 9 (b): interleaving trained better than stacking):
    old module i goes to position floor(i * n_target / n_source). For an
    integer multiple m that is 0, m, 2m, ...; for 3 -> 10 it is 0, 3, 6.

    Args:
        n_source: modules of the stage in the source (>= 1).
        n_target: modules of the stage in the target (>= n_source).

    Returns:
        A strictly increasing list of n_source positions in [0, n_target).
    """
    return [i * n_target // n_source for i in range(n_source)]


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
        plan.path_map.append([t_index, s_path.index])
        plan.retained.append(
            f"{structure.describe_path(target, target_paths[t_index])} <- source "
            f"{structure.describe_path(source, s_path)}")
    if mode == "function_preserving":
        preserve_function(source, target, mapped, plan, entries)
    else:
        copy_gates(source, target, mapped, entries)
        for path in target_paths:
            if path.index not in mapped:
                plan.new.append(structure.describe_path(target, path))
    return plan
