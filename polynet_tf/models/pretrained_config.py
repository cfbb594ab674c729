"""`PretrainedConfig`: what published weights of a preset expect (timm's `pretrained_cfg`).

Each architecture preset (`polynet_tf.models.architectures`) names its
published weights; the entry says which input, crop protocol and
normalisation the weights were measured with, so that evaluation, serving,
fine-tuning and the keras-hub converter look them up here instead of testing
for the released network by name. The download sources and hashes are
`polynet_tf.weights.pretrained.PRETRAINED_WEIGHTS[(preset, name)]`.
"""

import dataclasses
from typing import Tuple

# ImageNet statistics on the [0, 1] scale (the released weights').
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """Published weights of one preset.

    Attributes:
        name: the `weights=` name, e.g. "imagenet".
        num_classes: classes of the weights' classifier.
        input_size: the crop side the published accuracy was measured at.
        crop_protocol: the evaluator's protocol name of that measurement
            (`polynet_tf.data.protocols.PROTOCOL_NAMES`).
        resize_size: the shorter side (or squash side) the protocol resizes
            to before the centre crop; None: the protocol's own default.
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB standard deviation on the [0, 1] scale.
        description: provenance and published accuracy.
    """

    name: str
    num_classes: int = 1000
    input_size: int = 299
    crop_protocol: str = "single"
    resize_size: int = None
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    description: str = ""
