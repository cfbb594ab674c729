"""`PolyNetImageClassifier`: keras-hub's image classification task on a PolyNet.

keras-hub's `ImageClassifier` head is global average pooling, dropout and a
dense layer named "predictions", which is PolyNet's own head (paper section
3.4; dropout 0.2 in the released network), so the task holds exactly the
variables of `polynet_tf.PolyNet(include_top=True)`.
"""

import keras
import keras_hub

from polynet_tf.hub import presets
from polynet_tf.hub.backbone import PolyNetBackbone
from polynet_tf.hub.preprocessing import PolyNetImageClassifierPreprocessor

# PolyNet's head dropout (the released network's, and `PolyNet()`'s default).
DEFAULT_DROPOUT = 0.2


@keras.saving.register_keras_serializable(package="polynet_tf")
class PolyNetImageClassifier(keras_hub.models.ImageClassifier):
    """A `PolyNetBackbone` with PolyNet's classifier, as a keras-hub task.

    Args:
        backbone: a `PolyNetBackbone`.
        num_classes: number of classes of the dense layer.
        preprocessor: a `PolyNetImageClassifierPreprocessor` (or None: inputs
            are already PolyNet inputs).
        pooling: "avg" (PolyNet's) or "max".
        activation: activation of the dense layer; None returns logits
            (keras-hub's default; `compile()` then picks a from-logits loss).
        dropout: dropout rate before the dense layer (0.2, PolyNet's).
        head_dtype: dtype policy of the head (default: the backbone's).
        **kwargs: `keras_hub.models.Task` arguments (`name`, `compile`).

    Raises:
        ValueError: `backbone` is not a `PolyNetBackbone`, or bad head
            arguments.
    """

    backbone_cls = PolyNetBackbone
    preprocessor_cls = PolyNetImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        pooling="avg",
        activation=None,
        dropout=DEFAULT_DROPOUT,
        head_dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, PolyNetBackbone):
            raise ValueError(
                "`backbone` must be a `polynet_tf.hub.PolyNetBackbone`. Received: "
                f"backbone of type {type(backbone).__name__}"
            )
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
            )
        super().__init__(backbone=backbone, num_classes=num_classes, preprocessor=preprocessor,
                         pooling=pooling, activation=activation, dropout=dropout,
                         head_dtype=head_dtype, **kwargs)

    def polynet_kwargs(self):
        """Arguments of `polynet_tf.PolyNet()` that build this network with its top.

        Only average pooling exists in `PolyNet()`'s top.

        Raises:
            ValueError: the task pools with "max".
        """
        if self.pooling != "avg":
            raise ValueError(
                "PolyNet()'s top pools with 'avg'; this classifier pools with "
                f"{self.pooling!r}, so no PolyNet() matches it."
            )
        kwargs = self.backbone.polynet_kwargs()
        kwargs.update(
            include_top=True,
            classes=self.num_classes,
            classifier_activation=self.activation,
            dropout_rate=self.dropout,
            input_shape=self.backbone.image_shape,
        )
        return kwargs

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a preset (directory, `kaggle://` or `hf://` handle); see keras-hub.

        Raises:
            PresetError: the preset holds another model, or is unreadable.
        """
        with presets.clear_errors(preset, PolyNetBackbone):
            return super().from_preset(preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Writes the task, backbone and preprocessor to `preset_dir` (any URI).

        The preset appears complete or not at all (`polynet_tf.hub.save_preset`).
        """
        presets.save_preset(self, preset_dir, max_shard_size=max_shard_size)

    def load_task_weights(self, filepath):
        """Loads the head's weights, refusing a file that does not fit them.

        Raises:
            PresetError: a weight is missing, extra or of another shape.
        """
        presets.load_weights_strictly(
            lambda: super(PolyNetImageClassifier, self).load_task_weights(filepath), filepath)
