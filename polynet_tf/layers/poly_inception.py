"""One layer for the whole PolyInception family (the paper's section 3).

    y = ReLU(x + sum over paths p of  beta * m_p * h_p)

where each chain of the module spec is computed in cascaded form
(h_1 = F_1(x), h_i = F_i(ReLU(h_{i-1})), every block once per order), beta is
the residual scale and m_p the stochastic-path mask of path p (1 at inference).
This is exactly the released network's forward pass (`pretrainedmodels`
`MultiWay` and `InceptionResNet{B,C}Poly`).
"""

import keras

from polynet_tf.layers.batch_norm import BatchNormSettings
from polynet_tf.layers.blocks import BLOCK_TYPES, InceptionResidualBlock
from polynet_tf.layers.indexed import get_indexed
from polynet_tf.layers.module_spec import parse_module
from polynet_tf.layers.remat import rematerialized_call


@keras.saving.register_keras_serializable(package="polynet_tf")
class PolyInceptionModule(keras.layers.Layer):
    """A PolyInception module: k-way, poly-k, mpoly-k or a sum of them.

    Stochastic paths (paper section 4): in training only, every non-identity
    path is dropped per sample with probability `drop_path_rate`; kept paths
    are scaled by 1 / (1 - rate) so that inference needs no correction and is
    deterministic. The rate lives in a variable read inside the graph, so
    `set_drop_path_rate` takes effect in an already traced training step. It
    is not a weight: it is neither counted nor saved with the weights (the
    layer config carries it).

    Path gates (optional, beyond the paper): one trainable scalar per path
    multiplying its term, initialized to 1. Growing a network so that it
    computes exactly what the smaller one did sets the gates of new paths to 0
    where no parameters of their own could be zeroed (the F^2 term of a fully
    shared poly-k); being trainable, the gates then open during training.

    Args:
        block_type: "A", "B" or "C", the Inception block F of the stage.
        module: module spec text (see `module_spec`) or a `ModuleSpec`.
        residual_scale: beta, the dampening factor of every path.
        drop_path_rate: stochastic-path drop probability in [0, 1).
        width_multiplier: scales the blocks' channel counts.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: conv kernel initializer.
        seed: seed of the stochastic-path masks.
        path_gates: whether each path has a trainable gate (see above).
        rematerialize: in training, keep only the module's input for the
            backward pass and recompute its paths there (`keras.remat`):
            less memory, about one more forward pass of compute. Gradients
            are unchanged: the stochastic-path masks are drawn outside the
            recomputed part, and the recomputation leaves the BatchNorm
            moving statistics alone (they are updated once per step).
            Training with it needs the TensorFlow backend.
        **kwargs: base layer arguments.
    """

    def __init__(
        self,
        block_type,
        module="ir",
        residual_scale=1.0,
        drop_path_rate=0.0,
        width_multiplier=1.0,
        batch_norm=None,
        kernel_initializer="glorot_uniform",
        seed=None,
        path_gates=False,
        rematerialize=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if block_type not in BLOCK_TYPES:
            raise ValueError(
                f"`block_type` must be one of {BLOCK_TYPES}. Received: {block_type!r}"
            )
        self.block_type = block_type
        self.spec = parse_module(module)
        self.residual_scale = float(residual_scale)
        self.width_multiplier = float(width_multiplier)
        self.batch_norm = BatchNormSettings.from_value(batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.path_gates = bool(path_gates)
        self.rematerialize = bool(rematerialize)
        self.gates = None
        self._initial_drop_path_rate = _checked_rate(drop_path_rate)
        self._num_blocks = 0
        # One entry per chain: the (block index, application) of each order.
        self.chain_plan = []
        for chain in self.spec.chains():
            if chain.sharing == "none":
                plan = [(self._add_block(1), 0) for _ in range(chain.order)]
            elif chain.sharing == "all":
                plan = [(self._add_block(1), 0)] * chain.order
            else:
                index = self._add_block(chain.order)
                plan = [(index, i) for i in range(chain.order)]
            self.chain_plan.append(plan)
        self.seed_generator = keras.random.SeedGenerator(seed, name="path_seed")

    def _add_block(self, num_applications):
        setattr(
            self,
            f"block_{self._num_blocks}",
            InceptionResidualBlock(
                self.block_type,
                num_applications=num_applications,
                width_multiplier=self.width_multiplier,
                batch_norm=self.batch_norm,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=f"block_{self._num_blocks}",
            ),
        )
        self._num_blocks += 1
        return self._num_blocks - 1

    @property
    def blocks(self):
        """The distinct Inception blocks of the module, in creation order."""
        return get_indexed(self, "block", self._num_blocks)

    @property
    def num_paths(self):
        """Non-identity paths; also the number of block evaluations per call."""
        return self.spec.num_paths

    @property
    def drop_path_rate(self):
        """The current stochastic-path drop probability, a Python float."""
        variable = getattr(self, "_drop_path_rate_variable", None)
        if variable is None:
            return self._initial_drop_path_rate
        return float(keras.ops.convert_to_numpy(variable.value))

    def set_drop_path_rate(self, rate):
        """Sets the drop probability of every path; no retracing is needed.

        Args:
            rate: probability in [0, 1).

        Raises:
            ValueError: the rate is outside [0, 1).
        """
        rate = _checked_rate(rate)
        self._initial_drop_path_rate = rate
        variable = getattr(self, "_drop_path_rate_variable", None)
        if variable is not None:
            variable.assign(rate)

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
        if self.path_gates:
            self.gates = self.add_weight(
                shape=(self.num_paths,), initializer="ones", name="path_gates"
            )
        # Bypasses Keras's attribute tracking on purpose: the rate is state
        # that must not count as a weight (the released network has exactly
        # 361,088 non-trainable weights) nor enter weight files.
        object.__setattr__(
            self,
            "_drop_path_rate_variable",
            keras.Variable(
                self._initial_drop_path_rate, dtype="float32", trainable=False,
                name="drop_path_rate",
            ),
        )
        self.built = True

    def call(self, inputs, training=None):
        # Masks are drawn here, outside any recomputation: a mask drawn again
        # in the backward pass would differ from the forward pass's.
        path_scales = self._path_scales(inputs, training)
        if training and self.rematerialize:
            # The masks go in as inputs of the recomputed part: kept, not redrawn.
            return rematerialized_call(
                lambda x, *scales: self._sum_of_paths(x, scales, training),
                inputs, *path_scales,
            )
        return self._sum_of_paths(inputs, path_scales, training)

    def _sum_of_paths(self, inputs, path_scales, training):
        output = inputs
        path = 0
        for plan in self.chain_plan:
            hidden = inputs
            for order, (block_index, application) in enumerate(plan):
                if order:
                    hidden = keras.ops.relu(hidden)
                hidden = self.blocks[block_index](
                    hidden, application=application, training=training
                )
                output = output + hidden * path_scales[path]
                path += 1
        return keras.ops.relu(output)

    def _path_scales(self, inputs, training):
        """beta per path; in training, beta * keep-mask / (1 - rate) per sample."""
        scales = self._static_path_scales()
        if not training:
            return scales
        rate = keras.ops.cast(self._drop_path_rate_variable.value, "float32")
        batch_size = keras.ops.shape(inputs)[0]
        noise = keras.random.uniform(
            (batch_size, self.num_paths), seed=self.seed_generator
        )
        keep = keras.ops.cast(keras.ops.greater_equal(noise, rate), inputs.dtype)
        keep = keep / keras.ops.cast(1.0 - rate, inputs.dtype)
        return [
            keras.ops.reshape(keep[:, p], (-1, 1, 1, 1)) * scale
            for p, scale in enumerate(scales)
        ]

    def _static_path_scales(self):
        """beta per path, times its gate when the module has gates."""
        if self.gates is None:
            return [self.residual_scale] * self.num_paths
        gates = keras.ops.cast(self.gates, self.compute_dtype)
        return [gates[p] * self.residual_scale for p in range(self.num_paths)]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            block_type=self.block_type,
            module=str(self.spec),
            residual_scale=self.residual_scale,
            drop_path_rate=self.drop_path_rate,
            width_multiplier=self.width_multiplier,
            batch_norm=self.batch_norm.to_dict(),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            seed=self.seed,
            path_gates=self.path_gates,
            rematerialize=self.rematerialize,
        )
        return config


def _checked_rate(rate):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"`drop_path_rate` must be in [0, 1). Received: drop_path_rate={rate}"
        )
    return rate
