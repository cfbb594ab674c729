"""Maps a PyTorch state dict of the released PolyNet onto our Keras model.

The Keras model is walked layer by layer (stem, reductions, PolyInception
modules, head); every conv unit gets a structural address that a layout
(`polynet_tf.weights.layouts`) turns into checkpoint keys. Assignment is all
or nothing: any checkpoint tensor left unused, any Keras weight left
unassigned or any shape mismatch raises `CheckpointMismatchError` naming the
first bad key, before a single weight is changed.

Conversions (docs/design.md section 1): conv (O, I, kh, kw) -> (kh, kw, I, O); dense
(out, in) -> (in, out); BatchNorm weight, bias, running_mean, running_var ->
gamma, beta, moving_mean, moving_variance. `num_batches_tracked` is ignored.
"""

import dataclasses

import numpy as np

from polynet_tf.layers import BranchConcat, ConvBN, PolyInceptionModule
from polynet_tf.weights.layouts import get_layout, guess_layout

# PyTorch's BatchNorm2d default, which the released weights were made with.
TORCH_BN_EPSILON = 1e-5
IGNORED_SUFFIX = ".num_batches_tracked"
_BN_FIELDS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
_MODULE_KINDS = {"2way": "2way", "poly3[convs]": "poly3"}
_MIXED = ("3a", "4a", "5a")


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model, naming the first bad key.

    Attributes:
        key: the first bad key (checkpoint key, or Keras weight path).
        missing: expected checkpoint keys absent from the checkpoint.
        unexpected: checkpoint keys that no Keras weight uses.
        mismatched: (key, checkpoint shape, expected shape) triples.
        unassigned: Keras weight paths no checkpoint key maps to.
    """

    def __init__(self, message, key, missing=(), unexpected=(), mismatched=(), unassigned=()):
        super().__init__(message)
        self.key = key
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.unassigned = list(unassigned)


@dataclasses.dataclass(frozen=True)
class Target:
    """One Keras variable and the checkpoint tensor that fills it.

    Attributes:
        key: checkpoint key.
        variable: the Keras variable.
        transform: "conv", "dense" or "none" (how the tensor is rearranged).
    """

    key: str
    variable: object
    transform: str = "none"

    def expected_source_shape(self):
        """The checkpoint tensor shape this target needs."""
        shape = tuple(self.variable.shape)
        if self.transform == "conv":
            kh, kw, cin, cout = shape
            return (cout, cin, kh, kw)
        if self.transform == "dense":
            return shape[::-1]
        return shape

    def convert(self, array):
        array = np.asarray(array)
        if self.transform == "conv":
            array = np.transpose(array, (2, 3, 1, 0))
        elif self.transform == "dense":
            array = array.T
        return np.ascontiguousarray(array, dtype=self.variable.dtype)


def conv_units(model):
    """(address, ConvBN, shared) for every conv unit of a very_deep model, bottom to top.

    `shared` is True for a poly-3 block's branch convs (one conv, one
    BatchNorm per application).

    Raises:
        ValueError: the model is not the released very_deep network (a
            module other than 2-way / poly-3[convs], or a missing stem or
            reduction).
    """
    units = []
    stem = _layer(model, "stem")
    for i, part in enumerate(stem.parts[:3]):
        units.append((("stem", i), part, False))
    for mixed, part in zip(_MIXED, stem.parts[3:]):
        units += [
            (("mixed", mixed, b, j, n), op, False) for b, j, n, op in _branch_convs(part)
        ]
    counts = {}
    for layer in model.layers:
        if layer.name in ("reduction_a", "reduction_b"):
            which = layer.name[-1]
            units += [
                (("reduction", which, b, j, n), op, False) for b, j, n, op in _branch_convs(layer)
            ]
        elif isinstance(layer, PolyInceptionModule):
            stage = layer.block_type
            k = counts.get(stage, 0)
            counts[stage] = k + 1
            units += _module_units(layer, stage, k)
    for name in ("reduction_a", "reduction_b"):
        _layer(model, name)
    return units


def _module_units(module, stage, k):
    kind = _MODULE_KINDS.get(str(module.spec))
    if kind is None:
        raise ValueError(
            f"Layer {module.name!r} is a {module.spec} module; the released PolyNet has "
            "only 2way and poly3[convs] modules. Build the model with "
            "PolyNet(architecture='very_deep')."
        )
    units = []
    for index, block in enumerate(module.blocks):
        shared = block.num_applications > 1
        for b, j, n, op in _branch_convs(block.branches):
            units.append((("branch", stage, k, kind, index, b, j, n), op, shared))
        for application, projection in enumerate(block.projections):
            units.append((("projection", stage, k, kind, index, application), projection, False))
    return units


def _branch_convs(branch_concat):
    """(branch, op index, ops in branch, op) for each ConvBN of a BranchConcat."""
    if not isinstance(branch_concat, BranchConcat):
        raise ValueError(f"Layer {branch_concat.name!r} is not a BranchConcat.")
    ops = iter(branch_concat.ops)
    found = []
    for b, branch in enumerate(branch_concat.branches):
        for j, _ in enumerate(branch):
            op = next(ops)
            if isinstance(op, ConvBN):
                found.append((b, j, len(branch), op))
    return found


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer {name!r}; the converter needs a model "
            "built by PolyNet(architecture='very_deep')."
        ) from None


def targets(model, layout):
    """Every (checkpoint key -> Keras variable) pair for `model` in `layout`.

    Args:
        model: a Keras model built by `PolyNet(architecture="very_deep")`,
            with or without its top.
        layout: "pretrainedmodels" or "pytorchcv".

    Returns:
        (targets, head_keys): the list of `Target`s in model order, and the
        classifier's checkpoint keys (which a model without top does not use).

    Raises:
        ValueError: unknown layout, or a model that is not very_deep.
    """
    layout = get_layout(layout)
    found = []
    for address, unit, shared in conv_units(model):
        found.append(Target(layout.conv_key(address), unit.conv.kernel, "conv"))
        for index, norm in enumerate(unit.norms):
            if not np.isclose(norm.epsilon, TORCH_BN_EPSILON, rtol=0, atol=1e-12):
                raise ValueError(
                    f"BatchNorm {norm.path!r} has epsilon={norm.epsilon}; the released weights "
                    f"need {TORCH_BN_EPSILON} (PolyNet option bn_epsilon)."
                )
            prefix = layout.norm_prefix(address, index, shared)
            for torch_name, keras_name in _BN_FIELDS:
                found.append(Target(f"{prefix}.{torch_name}", getattr(norm, keras_name)))
    head_keys = (f"{layout.head}.weight", f"{layout.head}.bias")
    head = _find_dense(model)
    if head is not None:
        found.append(Target(head_keys[0], head.kernel, "dense"))
        found.append(Target(head_keys[1], head.bias))
    return found, head_keys


def _find_dense(model):
    try:
        return model.get_layer("predictions")
    except ValueError:
        return None


def assign_state_dict(model, state_dict, layout, source_name="checkpoint"):
    """Copies a PyTorch state dict of the released PolyNet into `model`.

    Nothing is assigned unless every check passes.

    Args:
        model: a Keras model built by `PolyNet(architecture="very_deep")`;
            without its top, the checkpoint's classifier is left unused.
        state_dict: mapping of checkpoint key -> array (numpy or anything
            `np.asarray` accepts), in checkpoint order.
        layout: "pretrainedmodels" or "pytorchcv".
        source_name: how errors name the checkpoint (e.g. its file name).

    Returns:
        The number of Keras variables assigned.

    Raises:
        CheckpointMismatchError: a missing, unused or wrongly shaped tensor,
            or a Keras weight left unassigned; the message names the first one.
        ValueError: unknown layout or a model that is not very_deep.
    """
    found, head_keys = targets(model, layout)
    by_key = {target.key: target for target in found}
    ignored = set() if _find_dense(model) is not None else set(head_keys)

    missing = [target.key for target in found if target.key not in state_dict]
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        if key.endswith(IGNORED_SUFFIX) or key in ignored:
            continue
        target = by_key.get(key)
        if target is None:
            unexpected.append(key)
        elif tuple(np.shape(value)) != target.expected_source_shape():
            mismatched.append((key, tuple(np.shape(value)), target.expected_source_shape()))
    assigned_ids = {id(target.variable) for target in found}
    unassigned = [w.path for w in model.weights if id(w) not in assigned_ids]

    if missing or unexpected or mismatched or unassigned:
        raise _mismatch_error(source_name, layout, state_dict, [t.key for t in found], missing,
                              unexpected, mismatched, unassigned)
    for target in found:
        target.variable.assign(target.convert(state_dict[target.key]))
    return len(found)


def _mismatch_error(source_name, layout, state_dict, expected, missing, unexpected, mismatched,
                    unassigned):
    order = {key: i for i, key in enumerate(state_dict)}
    problems = []  # ((checkpoint position, rank), key, text)
    for key, got, want in mismatched:
        problems.append(((order[key], 0), key, f"has shape {got} where the model needs {want}"))
    for key in unexpected:
        problems.append(((order[key], 0), key, "is not used by the model (unexpected tensor)"))
    # A missing key sits, in checkpoint order, just after the expected key
    # before it that is present.
    missing_set = set(missing)
    position = -1
    for rank, key in enumerate(expected):
        if key in missing_set:
            problems.append(((position + 0.5, rank), key, "is missing from the checkpoint"))
        else:
            position = order.get(key, position)
    for rank, path in enumerate(unassigned):
        problems.append(((len(order), rank), path, "(Keras weight) has no checkpoint tensor"))
    problems.sort(key=lambda p: p[0])
    _, first_key, first_text = problems[0]
    hint = ""
    guessed = guess_layout(state_dict)
    if guessed and guessed != layout:
        hint = f" The keys look like the {guessed!r} layout: use source={guessed!r}."
    elif missing and not unexpected and not mismatched:
        hint = " The checkpoint looks truncated: download it again."
    summary = ", ".join(
        f"{len(items)} {name}"
        for name, items in (("missing", missing), ("unexpected", unexpected),
                            ("wrongly shaped", mismatched), ("unassigned", unassigned))
        if items
    )
    message = (
        f"{source_name} does not match PolyNet very_deep in the {layout!r} layout: "
        f"first bad key {first_key!r} {first_text} ({summary}).{hint}"
    )
    return CheckpointMismatchError(message, first_key, missing, unexpected, mismatched, unassigned)
