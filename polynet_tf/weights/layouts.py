"""Checkpoint key names of the two public PyTorch ports of the released PolyNet.

Every conv unit of our very_deep model has a structural address (see
`polynet_tf.weights.mapping`); a layout turns an address into the prefix of
that unit's tensors in the PyTorch state dict:

    <prefix>.conv.weight                                    the conv kernel
    <prefix>.bn.{weight,bias,running_mean,running_var}      its BatchNorm
    <prefix>.<shared_norms>.<i>.{...}                       the i-th BatchNorm
                                                            of a poly-3 shared conv

Sources (read to learn the key names; no code taken from them):
- "pretrainedmodels": Cadene/pretrained-models.pytorch,
  `pretrainedmodels/models/polynet.py` (`PolyNet`, `PolyConv2d.bn_blocks`,
  `InceptionResNetBPoly.conv2d_blocks`).
- "pytorchcv": osmr/pytorchcv (formerly osmr/imgclsmob),
  `pytorchcv/models/polynet.py` (`PolyInitBlock`, `PolyResidual.pre_block`,
  `PolyConv.bns`; stage 2 and 3 start with their reduction unit, and every
  later unit is a poly-3 module followed by a 2-way module).

Addresses (all indices 0-based):
    ("stem", i)                                  the three stem convs
    ("mixed", "3a" | "4a" | "5a", branch, op, n) mixed blocks of the stem
    ("reduction", "a" | "b", branch, op, n)      reduction A / B
    ("branch", stage, k, kind, block, branch, op, n)
                                                 a conv inside a residual block
    ("projection", stage, k, kind, block, application)
                                                 a block's 1x1 projection
where n is the number of ops in that branch, stage is "A", "B" or "C", k the
module's index inside its stage and kind "2way" or "poly3".
"""

LAYOUTS = ("pretrainedmodels", "pytorchcv")

# pretrainedmodels names the shared convs of a poly-3 block by kernel shape.
_PM_POLY_PATH0 = {
    "B": ("path0_1x1", "path0_1x7", "path0_7x1"),
    "C": ("path0_1x1", "path0_1x3", "path0_3x1"),
}
_PM_STEM_MIXED_4A = ("conv2_short", "conv2_long")


class _Layout:
    """Names of one layout: `unit` dispatches on the address kind to the
    subclass's `_stem`, `_mixed`, `_reduction`, `_branch` and `_projection`."""

    name = None
    head = None  # prefix of the classifier (`.weight` is (classes, 2048))
    shared_norms = None  # attribute holding a poly-3 conv's BatchNorms

    def conv_key(self, address):
        return f"{self.unit(address)}.conv.weight"

    def norm_prefix(self, address, index, shared):
        unit = self.unit(address)
        return f"{unit}.{self.shared_norms}.{index}" if shared else f"{unit}.bn"

    def unit(self, address):
        """The prefix of the unit at `address` (see the module docstring)."""
        kind, rest = address[0], address[1:]
        if kind == "stem":
            return self._stem(*rest)
        if kind == "mixed":
            return self._mixed(*rest[:3])
        if kind == "reduction":
            return self._reduction(*rest)
        if kind == "branch":
            return self._branch(*rest)
        return self._projection(*rest)


class PretrainedModelsLayout(_Layout):
    """`pretrainedmodels.polynet` (keys such as `stage_a.0.blocks.0.path0.0.conv.weight`)."""

    name = "pretrainedmodels"
    head = "last_linear"
    shared_norms = "bn_blocks"

    def _stem(self, index):
        return f"stem.conv1.{index}"

    def _mixed(self, mixed, branch, op):
        if mixed == "4a":
            return f"stem.{_PM_STEM_MIXED_4A[branch]}.{op}"
        return {"3a": "stem.conv1_branch", "5a": "stem.conv2_branch"}[mixed]

    def _reduction(self, which, branch, op, n):
        return f"reduction_{which}.path{branch}" + (f".{op}" if n > 1 else "")

    def _branch(self, stage, k, module_kind, block, branch, op, n):
        module = f"stage_{stage.lower()}.{k}"
        if module_kind == "poly3":
            name = _PM_POLY_PATH0[stage][op] if branch == 0 else f"path{branch}"
            return f"{module}.{name}"
        return f"{module}.blocks.{block}.path{branch}" + (f".{op}" if n > 1 else "")

    def _projection(self, stage, k, module_kind, block, application):
        module = f"stage_{stage.lower()}.{k}"
        if module_kind == "poly3":
            return f"{module}.conv2d_blocks.{application}"
        return f"{module}.blocks.{block}.conv2d"


class PytorchcvLayout(_Layout):
    """`pytorchcv.models.polynet` (keys such as `features.stage2.unit2.poly.pre_block...`)."""

    name = "pytorchcv"
    head = "output.fc"
    shared_norms = "bns"

    def _stem(self, index):
        return f"features.init_block.conv{index + 1}"

    def _mixed(self, mixed, branch, op):
        block = {"3a": 1, "4a": 2, "5a": 3}[mixed]
        prefix = f"features.init_block.block{block}.branches.branch{branch + 1}"
        return f"{prefix}.conv_list.conv{op + 1}" if mixed == "4a" else f"{prefix}.conv"

    def _reduction(self, which, branch, op, n):
        stage = {"a": 2, "b": 3}[which]
        return f"features.stage{stage}.unit1.branches.branch{branch + 1}.conv_list.conv{op + 1}"

    def _branch(self, stage, k, module_kind, block, branch, op, n):
        unit = self._unit_name(stage, k, module_kind)
        if module_kind == "poly3":
            prefix = f"{unit}.poly.pre_block.branches.branch{branch + 1}"
            return f"{prefix}.conv_list.conv{op + 1}" if n > 1 else prefix
        prefix = f"{unit}.twoway.res_blocks.{block}.branches.branch{branch + 1}"
        return f"{prefix}.conv_list.conv{op + 1}" if n > 1 else f"{prefix}.conv"

    def _projection(self, stage, k, module_kind, block, application):
        unit = self._unit_name(stage, k, module_kind)
        if module_kind == "poly3":
            return f"{unit}.poly.res_blocks.{application}"
        return f"{unit}.twoway.res_blocks.{block}.conv"

    @staticmethod
    def _unit_name(stage, k, module_kind):
        # Stage A: unit1..unit10 are 2-way modules. Stages B and C: unit1 is the
        # reduction, then unit j (j >= 2) = our modules 2(j-2) (poly-3) and
        # 2(j-2)+1 (2-way).
        if stage == "A":
            if module_kind != "2way":
                raise ValueError(f"pytorchcv stage A has 2-way modules only; got {module_kind}")
            return f"features.stage1.unit{k + 1}"
        expected = "poly3" if k % 2 == 0 else "2way"
        if module_kind != expected:
            raise ValueError(
                f"pytorchcv stage {stage} alternates poly-3 and 2-way modules; "
                f"module {k} is {module_kind}"
            )
        stage_number = {"B": 2, "C": 3}[stage]
        return f"features.stage{stage_number}.unit{k // 2 + 2}"


_LAYOUTS = {layout.name: layout for layout in (PretrainedModelsLayout(), PytorchcvLayout())}


def get_layout(name):
    """The layout object for `name` ("pretrainedmodels" or "pytorchcv").

    Raises:
        ValueError: unknown layout name.
    """
    try:
        return _LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown checkpoint layout {name!r}; expected one of {LAYOUTS}."
        ) from None


def guess_layout(keys):
    """The layout whose key style `keys` use, or None when neither fits."""
    keys = list(keys)
    if any(key.startswith("features.init_block.") for key in keys):
        return "pytorchcv"
    if any(key.startswith("stem.conv1.") for key in keys):
        return "pretrainedmodels"
    return None
