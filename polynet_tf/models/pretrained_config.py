"""`PretrainedConfig`: published weights next to the architecture (timm's `pretrained_cfg`).

Each architecture preset (`polynet_tf.models.architectures`) names its
published weights. The entry says where the checkpoints are published and
their hashes, the `InputContract` (input size, crop protocol, normalisation)
their published accuracy was measured with, and the name of the converted
file in the Keras cache; the weights package (downloads, conversion),
evaluation, serving, fine-tuning and the keras-hub converter read it here
instead of testing for the released network by name.
"""

import dataclasses
from typing import Optional, Tuple

from polynet_tf.data.input_contract import InputContract


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """One public PyTorch checkpoint of a preset's weights.

    Attributes:
        layout: checkpoint key layout (`polynet_tf.weights.LAYOUTS`:
            "pytorchcv" or "pretrainedmodels").
        url: where it is published; a `.zip` URL holds the `.pth` file.
        filename: name of the `.pth` file (in the cache and in the zip).
        hash_algorithm: "sha1" or "sha256".
        file_hash: hex digest of the `.pth` file, or its first characters.
        reference: where these facts come from.
    """

    layout: str
    url: str
    filename: str
    hash_algorithm: str
    file_hash: str
    reference: str = ""

    def describe_hash(self):
        """The hash in words, e.g. "SHA-256 starting f71d82a5"."""
        name = self.hash_algorithm.upper().replace("SHA", "SHA-")
        if len(self.file_hash) < 40:
            return f"{name} starting {self.file_hash}"
        return f"{name} {self.file_hash}"


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """Published weights of one preset.

    Attributes:
        name: the `weights=` name, e.g. "imagenet".
        num_classes: classes of the weights' classifier.
        input_contract: how an image becomes the input the published
            accuracy was measured with (`polynet_tf.data.InputContract`):
            the default of every consumer of these weights.
        description: provenance and published accuracy.
        sources: the public checkpoints (`CheckpointSource`), in the order
            they are tried.
        converted_filename: name of the converted `.weights.h5` file in the
            Keras cache.
    """

    name: str
    num_classes: int = 1000
    input_contract: InputContract = InputContract()
    description: str = ""
    sources: Tuple[CheckpointSource, ...] = ()
    converted_filename: Optional[str] = None
