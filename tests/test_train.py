"""The training command's process set-up (the run itself: tests/training, tests/demo)."""

import os
import subprocess
import sys

import pytest

# Runs `train.main` far enough to fail on the missing --model_dir (before any
# TensorFlow op), then asks TensorFlow which CPU allocator it made: only the
# BFC allocator keeps statistics that can be reset.
_PROBE = """
from absl import flags
from polynet_tf import train
flags.FLAGS(["train"])
try:
    train.main([])
except SystemExit as exit:
    assert exit.code == 2, exit.code
import tensorflow as tf
tf.ones([4])
try:
    tf.config.experimental.reset_memory_stats("CPU:0")
    print("allocator: bfc")
except ValueError:
    print("allocator: default")
"""


def _allocator(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if env_value is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = env_value
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("env_value, expected", [
    (None, "allocator: bfc"),          # the command's default
    ("false", "allocator: default"),   # the environment's choice wins
])
def test_train_main_chooses_the_pooling_cpu_allocator_unless_told(env_value, expected):
    assert _allocator(env_value) == expected
