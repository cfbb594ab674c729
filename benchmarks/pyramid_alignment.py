"""What aligning PolyNet's maps onto keras-hub's grids costs (not a test).

1. Time: the backbone's four unpadded maps (stem mixed 4a, stages A-C) against
   `pyramid_outputs` (the same maps zero-padded by `AlignToGrid`), the two
   traced functions timed side by side in rounds, batch 1, on the released
   network's structure at full width ("very_deep" is too slow for a CPU
   benchmark: the padding's cost does not depend on the depth, only the
   baseline does, so the ratio here is an upper bound for very_deep).
2. Area: the share of each level's grid that is padding, which the heads
   compute on in addition (exact, from the map sizes).

Usage: python benchmarks/pyramid_alignment.py [--sizes 256 512] [--rounds 5]
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf.hub import PolyNetBackbone  # noqa: E402
from polynet_tf.hub.pyramid import PYRAMID_FEATURE_LEVELS, grid_size  # noqa: E402
from polynet_tf.models.features import feature_sizes  # noqa: E402

ARCHITECTURE = "A: 2way | B: poly3[convs], 2way | C: poly3[convs]"


def _area(size):
    parts = []
    for key, level in PYRAMID_FEATURE_LEVELS.items():
        side, grid = feature_sizes(size)[level], grid_size(size, level)
        parts.append(f"{key} {side}->{grid} ({1 - side * side / grid / grid:.0%} padding)")
    return ", ".join(parts)


def _round_times(functions, x, rounds):
    for function in functions.values():
        function(x)  # trace and warm up
        function(x)
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function(x)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"TensorFlow {tf.__version__}, {ARCHITECTURE} at full width, batch 1")
    backbone = PolyNetBackbone(ARCHITECTURE)
    raw = dict(zip(PYRAMID_FEATURE_LEVELS, (
        backbone.get_layer("stem").output[0], backbone.stage_outputs["stage_a"],
        backbone.stage_outputs["stage_b"], backbone.stage_outputs["stage_c"])))
    functions = {
        "unpadded maps": tf.function(keras.Model(backbone.input, raw)),
        "pyramid_outputs": tf.function(keras.Model(backbone.input, backbone.pyramid_outputs)),
    }
    for size in args.sizes:
        x = tf.random.uniform((1, size, size, 3))
        times = _round_times(functions, x, args.rounds)
        base = times["unpadded maps"]
        print(f"{size}x{size}: " + ", ".join(
            f"{name} {t * 1e3:.0f} ms ({t / base:.3f}x)" for name, t in times.items()))
        print(f"  {_area(size)}")


if __name__ == "__main__":
    main()
