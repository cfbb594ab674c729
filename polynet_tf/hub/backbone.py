"""`PolyNetBackbone`: any PolyNet body as a keras-hub `Backbone`.

The body is built by the package's own builder (`PolyNet(include_top=False)`),
so its layers, names and weights are exactly those of `PolyNet()`: a
`PolyNetImageClassifier` holds the same variables as `PolyNet()` with the top,
one for one (`polynet_tf.hub.convert`).

Feature maps (Zhang et al., CVPR 2017, Fig. 10; sizes for a 331x331 input at
full width): stem 39x39x384, stage A 39x39x384, stage B 19x19x1152, stage C
9x9x2048. keras-hub's `pyramid_outputs` keys a map by its level `Pn` (stride
2^n): P2 is the stem's mixed 4a (79x79x192), P3 stage A (the stem's output
is at the same level), P4 stage B, P5 stage C, each zero-padded onto the
grid of ceil(side / 2^n) cells that keras-hub's heads need
(`polynet_tf.hub.pyramid`). The four unpadded maps are in `stage_outputs`.
"""

import contextlib

import keras
import keras_hub

from polynet_tf.hub import presets, pyramid
from polynet_tf.models.architectures import input_contract, resolve_architecture
from polynet_tf.models.polynet import PolyNet

# Map -> keras-hub pyramid level (stride 2^n; 331 -> 39 is about 8), before alignment.
PYRAMID_LEVELS = {"stem/mixed_4a": "P2", "stage_a": "P3", "stage_b": "P4", "stage_c": "P5"}
STAGE_NAMES = ("stem", "stage_a", "stage_b", "stage_c")


@contextlib.contextmanager
def _dtype_policy_scope(dtype):
    """Builds layers under `dtype` (the builder takes no dtype argument)."""
    if dtype is None:
        yield
        return
    policy = keras.dtype_policies.get(dtype)
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        policy = policy.default_policy
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _stage_outputs(body):
    """The last feature map of the stem and of each stage, by name.

    Every stage has at least one module (the spec grammar requires it), and
    the layers are in topological order, so the last `stage_x_*` layer is
    the stage's output.
    """
    stem = body.get_layer("stem").output
    # A feature model's stem also returns its inner maps, its own output last.
    outputs = {"stem": stem[-1] if isinstance(stem, (list, tuple)) else stem}
    for layer in body.layers:
        for stage in STAGE_NAMES[1:]:
            if layer.name.startswith(stage + "_"):
                outputs[stage] = layer.output
    return outputs


@keras.saving.register_keras_serializable(package="polynet_tf")
class PolyNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A PolyNet without its classifier, as a keras-hub backbone.

    The constructor arguments are those of `polynet_tf.PolyNet()` (without the
    top); the output is the stage-C feature map.

    Args:
        architecture: a preset name (`polynet_tf.list_architectures()`, default
            the released "very_deep") or a stage spec such as
            "A: 2way*5 | B: (poly3, 2way)*5 | C: ir*5".
        image_shape: input (height, width, channels); height and width at
            least 75 or None.
        width_multiplier: scales every channel count (1.0: the paper's).
        residual_scale: None (the architecture's own schedule), a float, a
            {"start", "end"} schedule or one value per module.
        drop_path_rate: stochastic paths (paper section 4): a float r for the
            linear 0 -> r schedule, a schedule or one rate per module.
        bn_epsilon: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum of the moving statistics.
        synchronized_batch_norm: BatchNorm statistics over all replicas.
        kernel_initializer: conv kernel initializer.
        seed: seed of the stochastic-path masks.
        path_gates: a trainable scalar per path (function-preserving growth).
        rematerialize: recompute each PolyInception module, the stem and
            both reductions in the backward pass (less memory).
        dtype: dtype policy of the layers (e.g. "mixed_bfloat16").
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Raises:
        ValueError: invalid arguments (each message names the argument).
    """

    def __init__(
        self,
        architecture="very_deep",
        image_shape=(None, None, 3),
        width_multiplier=1.0,
        residual_scale=None,
        drop_path_rate=0.0,
        bn_epsilon=1e-5,
        bn_momentum=0.99,
        synchronized_batch_norm=False,
        kernel_initializer="glorot_uniform",
        seed=None,
        path_gates=False,
        rematerialize=False,
        dtype=None,
        **kwargs,
    ):
        if not isinstance(kernel_initializer, str):
            kernel_initializer = keras.initializers.get(kernel_initializer)
        options = dict(
            width_multiplier=width_multiplier,
            residual_scale=residual_scale,
            drop_path_rate=drop_path_rate,
            bn_epsilon=bn_epsilon,
            bn_momentum=bn_momentum,
            synchronized_batch_norm=synchronized_batch_norm,
            kernel_initializer=kernel_initializer,
            seed=seed,
            path_gates=path_gates,
            rematerialize=rematerialize,
        )
        image_shape = tuple(image_shape)
        used = tuple(pyramid.PYRAMID_FEATURE_LEVELS.values())
        with _dtype_policy_scope(dtype):
            body = PolyNet(architecture, include_top=False, input_shape=image_shape,
                           features_only=True, out_indices=used, **options)
            levels = dict(zip(used, body.outputs))
            pyramid_outputs = pyramid.aligned_pyramid(levels, body.input)
        stage_outputs = _stage_outputs(body)
        super().__init__(inputs=body.input, outputs=levels[4], dtype=dtype, **kwargs)

        # === Config ===
        self.architecture = architecture
        self.image_shape = image_shape
        self.options = options
        self.stage_outputs = stage_outputs
        self.pyramid_outputs = pyramid_outputs

    @property
    def default_image_size(self):
        """Input side the architecture was trained at (331 for "very_deep", else 299)."""
        preset, _ = resolve_architecture(self.architecture)
        return preset.default_size if preset else 299

    def default_image_converter(self):
        """The `PolyNetImageConverter` of this body's input contract.

        The architecture's published weights' contract (or "single" at its
        default size) at the body's input size. The converter class is found
        by its registered name: `polynet_tf.hub.preprocessing` imports this
        module, not the other way round.
        """
        size = self.image_shape[0] if self.image_shape[0] == self.image_shape[1] else None
        contract = input_contract(self.architecture, image_size=size)
        converter = keras.saving.get_registered_object("polynet_tf>PolyNetImageConverter")
        return converter.from_contract(contract)

    def polynet_kwargs(self):
        """Arguments of `polynet_tf.PolyNet()` that build this body (without the top)."""
        options = dict(self.options)
        if not isinstance(options["kernel_initializer"], str):
            options["kernel_initializer"] = keras.initializers.get(
                keras.initializers.serialize(options["kernel_initializer"]))
        return dict(architecture=self.architecture, **options)

    def get_config(self):
        config = super().get_config()
        options = dict(self.options)
        if not isinstance(options["kernel_initializer"], str):
            options["kernel_initializer"] = keras.initializers.serialize(
                options["kernel_initializer"])
        config.update(architecture=self.architecture, image_shape=self.image_shape, **options)
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a preset (directory, `kaggle://` or `hf://` handle); see keras-hub.

        Raises:
            PresetError: the preset holds another model, or is unreadable.
        """
        with presets.clear_errors(preset, cls):
            return super().from_preset(preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Writes config, weights and the default image converter to `preset_dir`.

        `preset_dir` may be any TensorFlow filesystem URI; the preset appears
        complete or not at all (see `polynet_tf.hub.save_preset`).
        """
        presets.save_preset(self, preset_dir, max_shard_size=max_shard_size)

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, refusing a `.weights.h5` file that does not fit exactly.

        keras-hub's loaders call this; Keras alone would ignore a file's extra
        weights (a deeper network's file loads "successfully").

        Raises:
            PresetError: a weight missing, extra or of another shape (the
                first is named), or an unreadable file.
        """
        if getattr(self, "_loading_strictly", False) or not str(filepath).endswith(".weights.h5"):
            return super().load_weights(filepath, *args, **kwargs)
        self._loading_strictly = True
        try:
            presets.load_backbone_weights(self, filepath)
        finally:
            self._loading_strictly = False
        return None
