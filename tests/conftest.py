"""Shared test set-up and helpers: quiet TensorFlow, TensorFlow backend, tiny networks, ports."""

import gc
import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

# CI=true: a skip for a missing test dependency fails (see the module).
from tests.ci_dependencies import (  # noqa: E402, F401
    pytest_make_collect_report,
    pytest_runtest_makereport,
)

# The repository's root folder.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Channel multiplier of the "tiny" networks used throughout the tests.
TINY_WIDTH = 0.0625
# Input and classes of the tiny networks: 75 is the smallest input PolyNet takes.
TINY_INPUT_SHAPE = (75, 75, 3)
TINY_CLASSES = 10


def tiny_polynet(architecture="ir_3_6_3", **options):
    """A tiny PolyNet: width 1/16, 75x75 input, 10 classes unless `options` say otherwise.

    Args:
        architecture: preset name or stage spec.
        **options: any other `PolyNet()` argument.

    Returns:
        A `keras.Model` with random weights.
    """
    from polynet_tf import PolyNet  # noqa: PLC0415  (after the backend is chosen above)

    options.setdefault("classes", TINY_CLASSES)
    options.setdefault("input_shape", TINY_INPUT_SHAPE)
    options.setdefault("width_multiplier", TINY_WIDTH)
    return PolyNet(architecture, **options)


def jax_subprocess_env():
    """The environment for a subprocess running the package on Keras's JAX backend, CPU only.

    XLA compiles without optimizing: each kernel shape's initializer and each
    step is a program of its own, and optimizing them took half the time of
    the JAX rates test (62 s against 33 s, same losses), while the tiny
    networks' steps run in milliseconds either way.

    Returns:
        A dict for `subprocess.run(env=...)`, with the repository importable.
    """
    python_path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    xla_flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                       "--xla_backend_optimization_level=0"]))
    return dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                PYTHONPATH=python_path, XLA_FLAGS=xla_flags)


def free_ports(count):
    """`count` distinct TCP ports free on localhost right now (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pytest_collection_modifyitems(items):
    """Files with a `slow` test run first, each file's tests kept together and in order.

    `scripts/test.sh` hands whole files to two processes in this order
    (`--dist loadfile --no-loadscope-reorder`). Minutes-long files started
    last would leave one process running alone at the end; started first,
    the many short files even out the two processes' finishing times.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # Without Python's garbage collection, which costs 0.3 s a test (800 tests):
    # `_collect_garbage` runs it once per module.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage():
    """Frees each module's models (reference cycles) before the next module."""
    yield
    gc.collect()

