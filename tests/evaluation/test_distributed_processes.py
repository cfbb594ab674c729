"""Two `python -m polynet_tf.evaluate` tasks: one killed mid-run, both rerun, same report."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from polynet_tf import evaluate
from polynet_tf.data import example_format
from polynet_tf.evaluation import distributed
from tests.evaluation import helpers
from tests.evaluation.test_model_sources import tiny_run  # noqa: F401

pytestmark = pytest.mark.slow  # processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(args, log):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": REPO}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "polynet_tf.evaluate", "--noprogress", *args],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def test_a_killed_task_stops_task_0_and_the_rerun_ends_with_the_same_report(
        tiny_run, parsed_flags, tmp_path):  # noqa: F811
    model_dir, _ = tiny_run
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(4):  # task 0: files 0, 2; task 1: files 1, 3
        examples = [example_format.make_example(
            helpers.encode_jpeg(helpers.photo(60 + 4 * shard, 80, n)), (3 * shard + n) % 10,
            "c", 60 + 4 * shard, 80, "x.jpg").SerializeToString() for n in range(2)]
        example_format.write_shard(
            str(data / example_format.shard_name("validation", shard, 4)), examples)
    args = ["--checkpoint", str(model_dir), "--data_pattern", str(data / "validation-*"),
            "--protocol", "polynet_multicrop", "--crop_size", "75", "--scales", "80"]
    output = tmp_path / "report.json"
    task_args = [*args, "--output", str(output), "--worker_hosts", "h0:2222,h1:2222",
                 "--task_timeout_seconds", "6"]
    tasks = [_launch([*task_args, "--task_index", str(i)], tmp_path / f"first_{i}.log")
             for i in range(2)]
    folder = tmp_path / "report.shards"
    files = sorted(str(p) for p in data.iterdir())
    task1_counts = [distributed.counts_path(str(folder), f) for f in files[1::2]]
    deadline = time.time() + 300
    while not os.path.exists(task1_counts[0]) and time.time() < deadline:
        assert tasks[1].poll() is None, open(tmp_path / "first_1.log").read()[-3000:]
        time.sleep(0.05)
    tasks[1].send_signal(signal.SIGKILL)
    tasks[1].wait(timeout=60)
    scored = [os.path.exists(p) for p in task1_counts]
    assert scored[0] and not all(scored), "task 1 finished before it was killed"
    code = tasks[0].wait(timeout=300)
    log0 = open(tmp_path / "first_0.log").read()
    assert code == evaluate.EXIT_TASK_FAILED, log0[-3000:]
    assert "evaluation task 1 stopped beating its heartbeat for 6 s with" in log0
    assert not output.exists()

    # The same commands again: task 1 scores only what it had left.
    tasks = [_launch([*task_args, "--task_index", str(i)], tmp_path / f"second_{i}.log")
             for i in range(2)]
    for index, task in enumerate(tasks):
        assert task.wait(timeout=300) == 0, open(tmp_path / f"second_{index}.log").read()[-3000:]
    assert "task 0 of 2: scored 0 file(s), skipped 2" in open(tmp_path / "second_0.log").read()
    assert f"task 1 of 2: scored {2 - sum(scored)} file(s), skipped {sum(scored)}" in open(
        tmp_path / "second_1.log").read()
    report = json.loads(output.read_text())
    alone = evaluate.run(parsed_flags(*args, "--output", str(tmp_path / "alone.json")))
    assert report["num_images"] == 8
    for key in ("num_images", "top1_accuracy", "top5_accuracy", "per_class", "protocol"):
        assert report[key] == alone[key], key
