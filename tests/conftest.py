"""Shared test set-up: quiet TensorFlow, TensorFlow backend, tiny networks."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

# CI=true: a skip for a missing test dependency fails (see the module).
from tests.ci_dependencies import (  # noqa: E402, F401
    pytest_make_collect_report,
    pytest_runtest_makereport,
)

# Channel multiplier of the "tiny" networks used throughout the tests.
TINY_WIDTH = 0.0625


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
