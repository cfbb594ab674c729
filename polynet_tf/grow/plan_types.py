"""The growth plan as data: what each target weight gets, per module a summary."""

import dataclasses
from typing import Optional

import keras
import numpy as np

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
        path_map: [target path index, source path index] of every retained
            path (indices are gate order).
        retained: descriptions "target path <- source path".
        new: descriptions of the new paths and how they start.
        dropped: descriptions of source paths with no counterpart.
    """

    target: str
    target_spec: str
    source: Optional[str] = None
    source_spec: Optional[str] = None
    path_map: list = dataclasses.field(default_factory=list)
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
