"""An evaluation split over tasks: the merged report is the one a single process writes."""

import os
import threading
import time

import numpy as np
import pytest

from polynet_tf import evaluate
from polynet_tf.data import example_format
from polynet_tf.evaluation import distributed, metrics
from tests.evaluation import helpers
from tests.evaluation.test_model_sources import save_colour_saved_model

# Every protocol at a small crop size; the multi-crop ones at two scales.
PROTOCOL_ARGS = {
    "single": ["--crop_size", "32"],
    "squash": ["--crop_size", "32"],
    "shorter_side": ["--crop_size", "32"],
    "pytorchcv": ["--crop_size", "32"],
    "googlenet144": ["--crop_size", "32", "--scales", "36,44"],
    "polynet_multicrop": ["--crop_size", "32", "--scales", "36,44", "--topk_fraction", "0.5"],
}
REPORT_KEYS = ("num_images", "top1_accuracy", "top5_accuracy", "top5_error", "per_class")


@pytest.fixture(scope="module")
def five_shards(tmp_path_factory):
    """5 shards (2, 2, 1, 1, 1 images) of photographs and solid colours, with a class index."""
    directory = tmp_path_factory.mktemp("five_shards")
    rng = np.random.default_rng(5)
    images = [helpers.photo(48, 64, 0), helpers.photo(60, 40, 1),
              helpers.solid(40, 56, (210, 40, 35)), helpers.solid(56, 40, (45, 200, 215)),
              helpers.photo(50, 50, 1)[::-1], helpers.solid(40, 40, (20, 20, 20)),
              helpers.photo(44, 70, 0)[:, ::-1]]
    examples = [example_format.make_example(
        helpers.encode_jpeg(np.ascontiguousarray(image)), int(rng.integers(10)), "c",
        image.shape[0], image.shape[1], f"image{n}.jpg").SerializeToString()
        for n, image in enumerate(images)]
    sizes = (2, 2, 1, 1, 1)
    names, start = [], 0
    for shard, size in enumerate(sizes):
        name = example_format.shard_name("validation", shard, len(sizes))
        example_format.write_shard(str(directory / name), examples[start:start + size])
        names.append(name)
        start += size
    example_format.write_class_index(
        str(directory), [f"class{i}" for i in range(10)], 0,
        splits={"validation": {"num_examples": 7, "shards": dict(zip(names, sizes))}})
    return str(directory / "validation-*")


@pytest.fixture(scope="module")
def colour_saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("colour") / "sm"
    save_colour_saved_model(path)
    return str(path)


@pytest.fixture(scope="module")
def soft_colour_saved_model(tmp_path_factory):
    """The colour classifier at a 5 times lower temperature: softer probabilities."""
    path = tmp_path_factory.mktemp("soft_colour") / "sm"
    save_colour_saved_model(path, temperature=0.002)
    return str(path)


def _split_run(parsed_flags, args, output, num_tasks):
    """Tasks num_tasks-1 ... 0 in turn in this process; task 0's report."""
    hosts = ",".join(f"localhost:{2222 + i}" for i in range(num_tasks))
    for index in reversed(range(num_tasks)):
        report = evaluate.run(parsed_flags(*args, "--output", output, "--worker_hosts", hosts,
                                           "--task_index", str(index)))
    return report


@pytest.mark.parametrize("protocol", sorted(PROTOCOL_ARGS))
def test_two_tasks_write_the_report_of_one_process(five_shards, colour_saved_model, protocol,
                                                   parsed_flags, tmp_path):
    args = ["--saved_model", colour_saved_model, "--data_pattern", five_shards,
            "--protocol", protocol, "--batch_size", "2", *PROTOCOL_ARGS[protocol]]
    alone = evaluate.run(parsed_flags(*args, "--output", str(tmp_path / "alone.json")))
    split = _split_run(parsed_flags, args, str(tmp_path / "split.json"), 2)
    assert alone["num_images"] == 7 and split["tasks"] == 2
    for key in REPORT_KEYS:
        assert split[key] == alone[key], key
    assert split["protocol"] == alone["protocol"] and split["models"] == alone["models"]
    # Every file was scored once, by the task it was dealt to.
    counts = sorted(p.name for p in (tmp_path / "split.shards").iterdir()
                    if p.name.endswith(distributed.COUNTS_SUFFIX))
    assert len(counts) == 5 and counts[0].startswith("validation-00000-of-00005-")


def test_an_ensemble_over_three_tasks_and_a_rerun_that_skips_scored_files(
        five_shards, colour_saved_model, soft_colour_saved_model, parsed_flags, tmp_path,
        capsys):
    # Two SavedModels (each run loads every model: a tiny PolyNet checkpoint cost
    # 3 s of CPU a run); a checkpoint split over task processes is
    # test_distributed_processes.py's, an ensemble with a checkpoint test_cli.py's.
    args = ["--model", f"saved_model={soft_colour_saved_model},weight=1",
            "--model", f"saved_model={colour_saved_model},weight=3",
            "--data_pattern", five_shards, "--protocol", "polynet_multicrop",
            "--crop_size", "75", "--scales", "80", "--crops_per_scale", "18"]
    alone = evaluate.run(parsed_flags(*args, "--output", str(tmp_path / "alone.json")))
    output = str(tmp_path / "split.json")
    split = _split_run(parsed_flags, args, output, 3)
    for key in REPORT_KEYS:
        assert split[key] == alone[key], key
    capsys.readouterr()
    # The same command again (task 2, then task 0): nothing is scored twice.
    hosts = "h0:1,h1:1,h2:1"
    for index in (2, 0):
        again = evaluate.run(parsed_flags(*args, "--output", output, "--worker_hosts", hosts,
                                          "--task_index", str(index)))
    printed = capsys.readouterr().out
    assert "task 0 of 3: scored 0 file(s), skipped 2" in printed
    assert "task 2 of 3: scored 0 file(s), skipped 1" in printed
    for key in REPORT_KEYS:
        assert again[key] == alone[key], key


def test_counts_of_another_evaluation_are_refused(five_shards, colour_saved_model,
                                                  parsed_flags, tmp_path):
    args = ["--saved_model", colour_saved_model, "--data_pattern", five_shards,
            "--crop_size", "32", "--output", str(tmp_path / "report.json"), "--resumable"]
    evaluate.run(parsed_flags(*args))
    with pytest.raises(ValueError, match="holds the counts of another evaluation .* delete "):
        evaluate.run(parsed_flags(*args, "--protocol", "squash"))


def test_a_failed_task_stops_task_0_with_its_error(five_shards, colour_saved_model,
                                                   parsed_flags, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    # Task 1's second file is not an image.
    for shard in range(4):
        payload = (b"not an image" if shard == 3 else
                   helpers.encode_jpeg(helpers.solid(40, 40, (200, 30, 30))))
        example_format.write_shard(
            str(folder / example_format.shard_name("validation", shard, 4)),
            [example_format.make_example(payload, 0, "c", 40, 40, "x.jpg").SerializeToString()])
    args = ["--saved_model", colour_saved_model, "--data_pattern", str(folder / "validation-*"),
            "--crop_size", "32", "--output", str(tmp_path / "report.json"),
            "--worker_hosts", "a:1,b:1"]
    with pytest.raises(Exception, match="Unknown image file format"):
        evaluate.run(parsed_flags(*args, "--task_index", "1"))
    # Task 0 starts after task 1 failed: the failure counts once task 1 had
    # the time to restart (min(60 s, --task_timeout_seconds)) and did not.
    with pytest.raises(distributed.TaskFailedError,
                       match=r"evaluation task 1 failed with 1 file\(s\) left \(.*Unknown image"):
        evaluate.run(parsed_flags(*args, "--task_index", "0", "--task_timeout_seconds", "3"))
    assert not (tmp_path / "report.json").exists()


def _counting_task(files, folder, index, task_timeout=30.0, started=0):
    """A task of a split whose file `f` scores as len(f) images of class 0, all hits."""
    def score_file(file):
        counter = metrics.AccuracyCounter(2, 1)
        counter.update(np.zeros((len(file), 1), np.int64), np.zeros(len(file), np.int64))
        return counter

    return distributed.ShardedEvaluation(files, score_file, {"test": 1}, folder, 2, index,
                                         task_timeout, started)


def test_a_failure_left_by_an_earlier_run_is_not_taken_for_a_new_one(tmp_path):
    folder = str(tmp_path / "report.json.shards")
    files = ["a", "bb", "ccc", "dddd"]
    # The earlier run: task 1 failed.
    distributed.announce_start(folder, 1)
    stale = tmp_path / "report.json.shards" / "task-00001.failed"
    stale.write_text("OSError: disk full")
    os.utime(stale, (time.time() - 10, time.time() - 10))  # gfile's clock counts in seconds
    # Both restarted; task 0 is through its files and merging before task 1 starts.
    task_0 = _counting_task(files, folder, 0)
    task_0.score_own_files()
    restarted = threading.Timer(1.0, lambda: _counting_task(files, folder, 1).score_own_files())
    restarted.start()
    merged = task_0.merge(2, 1, poll_seconds=0.1)
    restarted.join()
    assert merged.counts()["images"] == [10, 0] and merged.counts()["top1"] == [10, 0]
    # A failure written after task 0 started stops it at once.
    started = distributed.announce_start(folder, 0)
    (tmp_path / "report.json.shards" / "task-00001.failed").write_text("OSError: disk full")
    for name in (tmp_path / "report.json.shards").glob("bb-*.counts.json"):
        name.unlink()
    begun = time.monotonic()
    with pytest.raises(distributed.TaskFailedError, match=r"task 1 failed .*disk full"):
        _counting_task(files, folder, 0, started=started).merge(2, 1, poll_seconds=0.1)
    assert time.monotonic() - begun < 5


def test_a_task_that_never_starts_is_reported_not_waited_for(five_shards, colour_saved_model,
                                                             parsed_flags, tmp_path):
    args = ["--saved_model", colour_saved_model, "--data_pattern", five_shards,
            "--crop_size", "32", "--output", str(tmp_path / "report.json"),
            "--worker_hosts", "a:1,b:1", "--task_timeout_seconds", "2"]
    with pytest.raises(distributed.TaskFailedError,
                       match=r"task 1 never started for 2 s with 2 file\(s\) left"):
        evaluate.run(parsed_flags(*args))


@pytest.mark.parametrize("tf_config, expected", [
    ({"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
      "task": {"type": "worker", "index": 1}}, (3, 2)),
    ({"cluster": {"worker": ["w:1", "w:2"]}, "task": {"type": "worker", "index": 0}}, (2, 0)),
])
def test_task_layout_from_tf_config(monkeypatch, tf_config, expected):
    import json

    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distributed.task_layout("ignored:1", 5) == expected


def test_task_layout_from_flags_and_bad_index(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distributed.task_layout("", 0) == (1, 0)
    assert distributed.task_layout("h0:1,h1:1,h2:1", 2) == (3, 2)
    with pytest.raises(ValueError, match="task index 3 is out of range for 3 task"):
        distributed.task_layout("h0:1,h1:1,h2:1", 3)
