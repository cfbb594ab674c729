"""Parameters and multiply-adds of any PolyNet, computed from the layer tables.

An analytic count, independent of building Keras layers: the tests check it
against `model.count_params()`, and it prices networks too large to build
here (the paper's Fig. 6 / 11 compare networks by cost). Multiply-adds count
convolutions and the classifier (each application of a shared conv counts);
BatchNorm, ReLU, pooling and additions are not counted.
"""

import dataclasses

from polynet_tf.layers.blocks import (
    MIXED_3A,
    MIXED_4A,
    MIXED_5A,
    REDUCTION_A,
    REDUCTION_B,
    RESIDUAL_BRANCHES,
    STEM_CONVS,
)
from polynet_tf.layers.branches import scale_channels
from polynet_tf.models.architectures import resolve_architecture


@dataclasses.dataclass(frozen=True)
class Cost:
    """Cost of a network.

    Attributes:
        trainable_params: conv kernels, BN gamma/beta, classifier.
        non_trainable_params: BN moving mean/variance.
        multiply_adds: per image at the given input size.
    """

    trainable_params: int
    non_trainable_params: int
    multiply_adds: int

    @property
    def total_params(self):
        return self.trainable_params + self.non_trainable_params


class _Counter:
    def __init__(self, width_multiplier):
        self.width = width_multiplier
        self.trainable = 0
        self.non_trainable = 0
        self.macs = 0

    def conv(self, op, size, channels, num_norms=1, applications=1, filters=None):
        """Adds one conv unit; returns its output (size, channels)."""
        filters = filters or scale_channels(op["filters"], self.width)
        kh, kw = _pair(op["kernel_size"])
        stride = op.get("strides", 1)
        if op.get("padding", "same") == "valid":
            size = tuple((s - k) // stride + 1 for s, k in zip(size, (kh, kw)))
        self.trainable += kh * kw * channels * filters + 2 * filters * num_norms
        self.non_trainable += 2 * filters * num_norms
        self.macs += applications * size[0] * size[1] * kh * kw * channels * filters
        return size, filters

    def branches(self, branches, size, channels, num_norms=1, applications=1):
        total, out_size = 0, size
        for branch in branches:
            s, c = size, channels
            for op in branch:
                if op["op"] == "maxpool":
                    s = tuple((v - 3) // 2 + 1 for v in s)
                else:
                    s, c = self.conv(op, s, c, num_norms, applications)
            total += c
            out_size = s
        return out_size, total


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def network_cost(architecture="very_deep", input_size=331, width_multiplier=1.0,
                 include_top=True, classes=1000):
    """Counts parameters and multiply-adds of a PolyNet.

    Args:
        architecture: preset name or stage spec.
        input_size: input height and width (or a (height, width) pair).
        width_multiplier: as in `PolyNet()`.
        include_top: count the classifier.
        classes: classifier outputs.

    Returns:
        A `Cost`.
    """
    _, spec = resolve_architecture(architecture)
    counter = _Counter(width_multiplier)
    size, channels = _pair(input_size), 3
    for op in STEM_CONVS:
        size, channels = counter.conv(op, size, channels)
    for table in (MIXED_3A, MIXED_4A, MIXED_5A):
        size, channels = counter.branches(table, size, channels)
    for stage in spec.stages:
        if stage.name == "B":
            size, channels = counter.branches(REDUCTION_A, size, channels)
        elif stage.name == "C":
            size, channels = counter.branches(REDUCTION_B, size, channels)
        for module in stage.modules:
            for chain in module.chains():
                _count_chain(counter, stage.name, chain, size, channels)
    if include_top:
        counter.trainable += channels * classes + classes
        counter.macs += channels * classes
    return Cost(counter.trainable, counter.non_trainable, counter.macs)


def _count_chain(counter, block_type, chain, size, channels):
    """One chain: distinct blocks, one fully shared block, or shared convs."""
    if chain.sharing == "none":
        blocks = [(1, 1)] * chain.order  # (norms per conv, applications)
    elif chain.sharing == "all":
        blocks = [(1, chain.order)]
    else:
        blocks = [(chain.order, chain.order)]
    projection = {"op": "conv", "kernel_size": 1}
    for num_norms, applications in blocks:
        _, concat = counter.branches(
            RESIDUAL_BRANCHES[block_type], size, channels, num_norms, applications
        )
        # Shared convs keep one projection per application; "all" shares it.
        projections = num_norms
        for _ in range(projections):
            counter.conv(projection, size, concat, applications=applications // projections,
                         filters=channels)
