"""The mapping report: for every target weight, its source weight or "new"."""

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from polynet_tf import fileio
from polynet_tf.grow.plan_types import COPIED, NEW, SET, ZEROED

REPORT_VERSION = 1
TEXT_REPORT_SUFFIX = ".mapping.txt"
JSON_REPORT_SUFFIX = ".mapping.json"


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One target weight in the report.

    Attributes:
        target: target weight path, e.g. "stage_b_2/block_0/projection/bn/gamma".
        source: source weight path for "copied", else None.
        action: "copied" (bit-identical), "new" (as initialized), "zeroed"
            (new, set to 0 so its path starts at 0) or "set" (path gates,
            computed from the source; see `note`).
        shape: the weight's shape.
        value: the assigned value for "zeroed" and "set" path gates.
        note: why, where it helps.
    """

    target: str
    source: Optional[str]
    action: str
    shape: tuple
    value: Optional[list] = None
    note: str = ""


@dataclasses.dataclass
class GrowthReport:
    """What `grow_model` did, per weight and per module.

    Attributes:
        mode: "paper" or "function_preserving".
        source: description of the source (architecture, checkpoint, ...).
        target: description of the target (architecture, options, output).
        weights: one `WeightEntry` per target weight, in model order.
        modules: per target module, a dict with keys target, target_spec,
            source, source_spec, retained, new, dropped.
        not_carried: source weight paths no target weight takes.
    """

    mode: str
    source: dict
    target: dict
    weights: list
    modules: list
    not_carried: list

    @classmethod
    def from_plan(cls, plan, source=None, target=None):
        """Builds the report of a `GrowthPlan` (before or after it is applied)."""
        weights = []
        for entry in plan.weights:
            value = None
            if entry.action == SET or (entry.action == ZEROED and entry.value.size <= 16):
                value = [float(v) for v in np.ravel(entry.value)]
            weights.append(WeightEntry(
                target=entry.target.path,
                source=entry.source.path if entry.source is not None else None,
                action=entry.action,
                shape=tuple(int(d) for d in entry.target.shape),
                value=value,
                note=entry.note,
            ))
        return cls(
            mode=plan.mode,
            source=dict(source or {}),
            target=dict(target or {}),
            weights=weights,
            modules=[dataclasses.asdict(module) for module in plan.modules],
            not_carried=list(plan.not_carried),
        )

    def retained(self):
        """{target path: source path} of every weight copied bit-identically."""
        return {w.target: w.source for w in self.weights if w.action == COPIED}

    def new(self):
        """Target paths of new weights ("new", "zeroed" or "set")."""
        return [w.target for w in self.weights if w.action != COPIED]

    def counts(self):
        """Number of weights and of scalars per action."""
        counts = {}
        for w in self.weights:
            tensors, scalars = counts.get(w.action, (0, 0))
            counts[w.action] = (tensors + 1, scalars + int(np.prod(w.shape, dtype=int)))
        return counts

    def to_dict(self):
        """A JSON-serializable dict (the `.mapping.json` file)."""
        return {
            "version": REPORT_VERSION,
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
            "summary": {action: {"weights": n, "scalars": s}
                        for action, (n, s) in sorted(self.counts().items())},
            "modules": self.modules,
            "weights": [
                {k: (list(v) if k == "shape" else v)
                 for k, v in dataclasses.asdict(w).items() if v not in (None, "")}
                for w in self.weights
            ],
            "not_carried": self.not_carried,
        }

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    def to_text(self):
        """The human-readable report (the `.mapping.txt` file)."""
        lines = [f"PolyNet growth by insertion (mode: {self.mode})"]
        for role, info in (("source", self.source), ("target", self.target)):
            details = ", ".join(f"{k}={v}" for k, v in info.items())
            lines.append(f"{role}: {details}")
        summary = ", ".join(
            f"{n} {action} ({s} scalars)" for action, (n, s) in sorted(self.counts().items()))
        lines += [f"weights: {summary}", f"source weights not carried: {len(self.not_carried)}",
                  "", "modules (target <- source):"]
        for module in self.modules:
            source = (f"{module['source']} ({module['source_spec']})"
                      if module["source"] else "inserted")
            lines.append(f"  {module['target']} ({module['target_spec']}) <- {source}")
            for key in ("retained", "new", "dropped"):
                for item in module[key]:
                    lines.append(f"      {key}: {item}")
        lines += ["", "weights (target <- source | new):"]
        width = max((len(w.target) for w in self.weights), default=0)
        for w in self.weights:
            if w.action == COPIED:
                origin = w.source
            elif w.action == NEW:
                origin = "new"
            elif w.action == ZEROED:
                origin = "new, zeroed" + (f"  # {w.note}" if w.note else "")
            else:
                origin = f"set = {_short(w.value)}" + (f"  # {w.note}" if w.note else "")
            lines.append(f"  {w.target:<{width}}  <- {origin}")
        if self.not_carried:
            lines += ["", "source weights not carried:"]
            lines += [f"  {path}" for path in self.not_carried]
        return "\n".join(lines) + "\n"

    def save(self, prefix):
        """Writes `prefix + ".mapping.txt"` and `prefix + ".mapping.json"`.

        Each file is written under a temporary name, then renamed; `prefix`
        may be a URI (`gs://...`).

        Returns:
            The (text, JSON) paths.
        """
        prefix = os.fspath(prefix)
        paths = (prefix + TEXT_REPORT_SUFFIX, prefix + JSON_REPORT_SUFFIX)
        for path, content in zip(paths, (self.to_text(), self.to_json())):
            fileio.atomic_write_text(path, content)
        return paths

    def __str__(self):
        return self.to_text()


def _short(values):
    shown = ", ".join(f"{v:g}" for v in values[:8])
    return f"[{shown}{', ...' if len(values) > 8 else ''}]"
