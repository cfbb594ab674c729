"""Fixtures for training tests: a synthetic TFRecord dataset and CLI launchers."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import free_ports  # noqa: F401  (re-exported for the training tests)
from tests.training.network import NamespacePair
from tests.training.synthetic_data import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(ROOT, "official_configs", "tiny_cpu.yaml")
# Three modules (2-way, released poly-3, 2-way): traces in seconds, learns in 100 steps.
SMALL_ARCHITECTURE = "A: 2way | B: poly3[convs] | C: 2way"


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory):
    """(train pattern, validation pattern) of a 4-class colour-tint dataset."""
    return write_dataset(str(tmp_path_factory.mktemp("synthetic")), num_train=256, num_val=64)


def overrides(shards, **values):
    """--params_override text for the tiny config on the synthetic shards."""
    train, validation = shards
    items = {"model.num_classes": 4, "model.architecture": SMALL_ARCHITECTURE,
             "train_data.file_pattern": train,
             "eval_data.file_pattern": validation, "model.seed": 3,
             "trainer.adaptive_drop_path.enabled": False}
    items.update(values)
    return ",".join(f"{key}={value}" for key, value in items.items())




def train_command(model_dir, params_override, mode="train", worker_hosts=None, task_index=0):
    command = [sys.executable, "-m", "polynet_tf.train", f"--config={TINY_CONFIG}",
               f"--model_dir={model_dir}", f"--mode={mode}",
               f"--params_override={params_override}"]
    if worker_hosts:
        command += [f"--worker_hosts={','.join(worker_hosts)}", f"--task_index={task_index}"]
    return command


def launch(command, log_path, tf_config=None, cwd=ROOT):
    """Starts `command` with the package importable; TF_CONFIG only if given."""
    python_path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    # TensorFlow's preemption handler asks GCE's metadata server whether it
    # runs on GCE; a closed local port answers "no" at once, with no lookup.
    env = dict(os.environ, PYTHONPATH=python_path,
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", GCE_METADATA_IP="127.0.0.1:9")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    _LAUNCHED.append(process)
    return process


# Processes `launch` started during the current test.
_LAUNCHED = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """Kills what a test launched and left running (it failed before waiting on it): a
    leftover worker would wait for its peers up to its own timeouts, taking the CPU from the
    tests that follow."""
    yield
    while _LAUNCHED:
        process = _LAUNCHED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def namespace_pair():
    """Two network namespaces joined by a veth pair (tests.training.network), removed after."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("tc")):
        pytest.skip("needs root and iproute2 (ip, tc)")
    pair = NamespacePair(f"pn{os.getpid() % 100000}")
    try:
        pair.create()
        yield pair
    finally:
        pair.destroy()


def wait_all(processes, timeout):
    """Exit statuses of `processes` and seconds each took, from now; kills leftovers."""
    start, ends = time.time(), [None] * len(processes)
    while None in ends and time.time() - start < timeout:
        for index, process in enumerate(processes):
            if ends[index] is None and process.poll() is not None:
                ends[index] = time.time() - start
        time.sleep(0.1)
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    return [process.returncode for process in processes], ends
