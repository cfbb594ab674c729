"""What growth needs to know about a built PolyNet: stages, paths and slots.

A *path* is one term of a module's polynomial (its index is the index of its
path gate). Path (chain c, order o) runs the block application `Slot(block,
application)` given by `PolyInceptionModule.chain_plan[c][o]`. A slot's
weights are the block's branch conv kernels (shared by all applications of
a `poly[convs]` block), the BatchNorms of that application, and that
application's 1x1 projection conv + BatchNorm.
"""

import collections
import dataclasses

from polynet_tf.layers import ConvBN, PolyInceptionModule


@dataclasses.dataclass(frozen=True)
class Slot:
    """One application of one block of a module."""

    block: int
    application: int


@dataclasses.dataclass(frozen=True)
class Path:
    """One non-identity path of a module, in `call` (and gate) order."""

    index: int
    chain: int
    order: int
    slot: Slot


def stage_modules(model):
    """The PolyInception modules of `model` per stage, bottom first.

    Returns:
        An ordered dict {"A": [module, ...], "B": [...], "C": [...]}.
    """
    stages = collections.OrderedDict()
    for layer in model.layers:
        if isinstance(layer, PolyInceptionModule):
            stages.setdefault(layer.block_type, []).append(layer)
    return stages


def module_chains(module):
    """The paths of a module grouped by chain: a list of lists of `Path`."""
    chains = []
    index = 0
    for c, plan in enumerate(module.chain_plan):
        chain = []
        for order, (block, application) in enumerate(plan):
            chain.append(Path(index, c, order, Slot(block, application)))
            index += 1
        chains.append(chain)
    return chains


def module_paths(module):
    """Every path of a module in gate order."""
    return [path for chain in module_chains(module) for path in chain]


def slot_weights(module, slot):
    """The weights one block application uses, in a fixed order.

    Returns:
        A list of variables: branch conv kernels, then the application's
        branch BatchNorm weights (gamma, beta, moving mean, moving variance
        per conv), then its projection's conv kernel and BatchNorm weights.
    """
    block = module.blocks[slot.block]
    units = [op for op in block.branches.ops if isinstance(op, ConvBN)]
    kernels = [unit.conv.kernel for unit in units]
    norms = [w for unit in units for w in unit.norms[slot.application].weights]
    return kernels + norms + list(block.projections[slot.application].weights)


def projection_norm(module, slot):
    """The last BatchNorm of a slot: its projection's (no ReLU follows it)."""
    return module.blocks[slot.block].projections[slot.application].norms[0]


def describe_path(module, path):
    """A short human name of a path, e.g. "path 1 (chain 0, order 2, block_0 app 1)"."""
    block = module.blocks[path.slot.block].name
    app = "" if module.blocks[path.slot.block].num_applications == 1 else (
        f" app {path.slot.application}")
    return f"path {path.index} (chain {path.chain}, order {path.order + 1}, {block}{app})"


def weighted_layers(model):
    """Layers with weights that are not PolyInception modules (stem, reductions, head)."""
    return [
        layer for layer in model.layers
        if layer.weights and not isinstance(layer, PolyInceptionModule)
    ]


def relative_path(variable, layer):
    """A variable's path below its top-level layer, e.g. "conv1/bn/gamma"."""
    prefix = layer.name + "/"
    path = variable.path
    return path[len(prefix):] if path.startswith(prefix) else path
