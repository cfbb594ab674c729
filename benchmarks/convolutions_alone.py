"""The convolutions of a traced graph, run alone: what bounds a network's speed.

Shared by the benchmarks (`train_vs_reference.py` for training steps,
`forward.py --paths` for inference): the time a traced function spends
outside its convolutions is its time minus that of `convolutions_only`.
Not a benchmark itself.
"""

import tensorflow as tf

_CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
_SIZE_INPUTS = {"Conv2DBackpropInput": "input_sizes", "Conv2DBackpropFilter": "filter_sizes"}
_INPUT_NAMES = {"Conv2D": ("input", "filter"),
                "Conv2DBackpropInput": ("input_sizes", "filter", "out_backprop"),
                "Conv2DBackpropFilter": ("input", "filter_sizes", "out_backprop")}


def convolutions_only(graph):
    """A function running every convolution op of `graph`, and nothing else.

    Each op is rebuilt with its attributes and input shapes (which must be
    static: trace at the batch to measure); its float inputs are random
    tensors of their own, made once, and its size inputs the shape it had in
    `graph`. Tensors of their own, rather than one per shape: the traced
    function reads each activation, gradient and kernel from memory, and
    shared inputs would sit in the caches (that way a training step's
    convolutions took 0.84 s instead of 1.25 s at batch 2 on a 2-core AVX-512
    machine). In an inference graph the ops are plain Conv2D: the bias and
    ReLU that Grappler fuses into them are left out.

    Args:
        graph: a traced `tf.Graph` (a concrete function's `.graph`).

    Returns:
        `(function, info)`: a `tf.function` taking any arguments (ignored)
        that runs the convolutions, and a dict with `conv_ops` (their number)
        and `input_gib` (the size of their inputs).

    Raises:
        RuntimeError: `graph` has no convolution op.
    """
    ops = [op for op in graph.get_operations() if op.type in _CONV_OPS]
    if not ops:
        raise RuntimeError("The traced graph has no convolution ops.")
    generator = tf.random.Generator.from_seed(0)
    num_bytes = 0

    def random_tensor(tensor):
        nonlocal num_bytes
        num_bytes += tensor.dtype.size * tensor.shape.num_elements()
        return tf.cast(generator.normal(tensor.shape), tensor.dtype)

    calls = []
    for op in ops:
        arguments = {name: op.get_attr(name) for name in
                     ("strides", "padding", "explicit_paddings", "data_format", "dilations")}
        for name, tensor in zip(_INPUT_NAMES[op.type], op.inputs):
            if name == _SIZE_INPUTS.get(op.type):
                arguments[name] = tf.constant(op.outputs[0].shape.as_list(), tf.int32)
            else:
                arguments[name] = random_tensor(tensor)
        calls.append((getattr(tf.raw_ops, op.type), arguments))

    @tf.function
    def convolutions(*unused):
        # One element of each output is used, so that no op is pruned away
        # (graph optimization drops side-effect-free ops that feed only
        # control dependencies).
        return tf.add_n([tf.reshape(call(**arguments), [-1])[0] for call, arguments in calls])

    return convolutions, {"conv_ops": len(ops), "input_gib": num_bytes / 2**30}
