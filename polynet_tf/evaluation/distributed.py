"""One evaluation split over several tasks through files: no collectives, resumable.

The TFRecord files are dealt out to the tasks (file `i` of the sorted list to
task `i mod tasks`), so every record is scored exactly once. A task scores
its files one by one and writes each file's per-class counts (images, top-1
and top-k hits: `metrics.AccuracyCounter.counts`) to the work folder beside
the report (`work_dir`), under a temporary name then renamed: a file's
counts are there whole or not at all. Task 0 then waits for every file's
counts, adds them up (sums of counts are exact) and writes the same report one
process would write.

A task run again with the same command skips the files already scored, so a
killed evaluation resumes where it stopped; counts written by another
evaluation (another model, protocol or label offset) are refused. Each task
beats a heartbeat file while it works and writes a `.failed` file with its
error if it stops on one: task 0 stops with `TaskFailedError` instead of
waiting for counts that will never come.
"""

import hashlib
import json
import os
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional

from absl import logging

from polynet_tf import fileio
from polynet_tf.evaluation import metrics

WORK_DIR_SUFFIX = ".shards"
COUNTS_SUFFIX = ".counts.json"
# A task's heartbeat is rewritten this often (at most; sooner for short timeouts).
HEARTBEAT_SECONDS = 10.0
# How long task 0 lets a task restart whose `.failed` file is older than task 0's
# own start (the earlier run's, removed by the task when it starts again).
RESTART_GRACE_SECONDS = 60.0


class TaskFailedError(RuntimeError):
    """Another task of the evaluation failed or stopped beating its heartbeat."""


class StaleCountsError(ValueError):
    """The work folder holds counts of another evaluation."""


def task_layout(worker_hosts: str = "", task_index: int = 0):
    """(number of tasks, this task's index) from TF_CONFIG, else the flags.

    TF_CONFIG's `chief` (if any) is task 0 and its workers follow, as in
    training; an `evaluator` entry is not an evaluation task.

    Args:
      worker_hosts: comma-separated `host:port` of every task (only their
        number matters: the tasks share files, not connections).
      task_index: this task's index in `worker_hosts`.

    Returns:
      (num_tasks, index).

    Raises:
      ValueError: a malformed TF_CONFIG, or an index out of range.
    """
    text = os.environ.get("TF_CONFIG")
    if text:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        cluster = config.get("cluster", {})
        chief, workers = cluster.get("chief", []), cluster.get("worker", [])
        task = config.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        if kind not in ("chief", "worker"):
            raise ValueError(f"TF_CONFIG task type {kind!r}: the tasks of an evaluation are "
                             "'chief' and 'worker' (leave the evaluator out).")
        num_tasks = len(chief) + len(workers)
        index += len(chief) if kind == "worker" else 0
    else:
        num_tasks = len([h for h in worker_hosts.split(",") if h.strip()]) or 1
        index = task_index
    if not 0 <= index < num_tasks:
        raise ValueError(f"task index {index} is out of range for {num_tasks} task(s) "
                         "(--task_index counts from 0 in --worker_hosts).")
    return num_tasks, index


def work_dir(output: str) -> str:
    """The folder of the per-file counts of the report `output` (`x.json` -> `x.shards`)."""
    stem = output[:-len(".json")] if output.endswith(".json") else output
    return stem + WORK_DIR_SUFFIX


def own_files(files: List[str], num_tasks: int, index: int) -> List[str]:
    """The files task `index` of `num_tasks` scores (every file goes to one task)."""
    return list(files[index::num_tasks])


def counts_path(folder: str, file: str) -> str:
    """Where the counts of the TFRecord `file` go (its name, and a hash of its full path)."""
    digest = hashlib.sha1(file.encode("utf-8")).hexdigest()[:8]
    return fileio.join(folder, f"{fileio.basename(file)}-{digest}{COUNTS_SUFFIX}")


def announce_start(folder: str, index: int) -> int:
    """Marks task `index` as alive again: its old `.failed` file goes, a heartbeat comes.

    Called when a task starts, before its models load: task 0 then neither
    takes the error of this task's earlier run for a new one nor gives up on
    it while it loads.

    Returns:
      The heartbeat's modification time on the storage's clock (ns; 0 where
      the file system keeps none): when this task started.
    """
    fileio.makedirs(folder)
    fileio.remove_tree(_marker(folder, index, "failed"))
    heartbeat = _marker(folder, index, "heartbeat")
    _Heartbeat(heartbeat, HEARTBEAT_SECONDS).beat()
    return fileio.modified_time_ns(heartbeat)


def _marker(folder, task, kind):
    return fileio.join(folder, f"task-{task:05d}.{kind}")


class ShardedEvaluation:
    """One task's part of an evaluation split by file, and task 0's merge.

    Args:
      files: every TFRecord file of the evaluation, sorted (the same list on
        every task).
      score_file: file -> `metrics.AccuracyCounter` of its records.
      identity: JSON-ready description of the evaluation (models, protocol,
        label offset): counts are reused only by the same evaluation.
      folder: the work folder (`work_dir` of the report).
      num_tasks: tasks of the evaluation.
      index: this task's index.
      task_timeout: seconds task 0 waits on a task whose heartbeat does not
        change before it gives up on it.
      started: what `announce_start` returned when this task started (0:
        the start `score_own_files` announces).
    """

    def __init__(self, files: List[str], score_file: Callable[[str], metrics.AccuracyCounter],
                 identity: Dict, folder: str, num_tasks: int, index: int,
                 task_timeout: float = 600.0, started: int = 0):
        self.files = list(files)
        self.score_file = score_file
        self.identity = json.loads(json.dumps(identity))  # as it reads back from JSON
        self.folder = folder
        self.num_tasks = num_tasks
        self.index = index
        self.task_timeout = float(task_timeout)
        self.started = started

    # ------------------------------------------------------------ one task
    def score_own_files(self) -> Dict[str, int]:
        """Scores this task's files that have no counts yet.

        Returns:
          {"scored": files scored now, "skipped": files already scored}.

        Raises:
          StaleCountsError: the folder holds counts of another evaluation.
        """
        announced = announce_start(self.folder, self.index)
        self.started = self.started or announced
        done = {"scored": 0, "skipped": 0}
        with _Heartbeat(self._marker(self.index, "heartbeat"),
                        min(HEARTBEAT_SECONDS, self.task_timeout / 4)):
            try:
                for file in own_files(self.files, self.num_tasks, self.index):
                    if self._read_counts(file) is not None:
                        done["skipped"] += 1
                        continue
                    counter = self.score_file(file)
                    fileio.write_json(counts_path(self.folder, file), {
                        "evaluation": self.identity, "file": file, "task": self.index,
                        "counts": counter.counts()})
                    done["scored"] += 1
                    logging.info("task %d: scored %s (%d images)", self.index, file,
                                 counter.num_images)
            except BaseException as error:
                if not isinstance(error, StaleCountsError):
                    self._write_failure(error)
                raise
        return done

    def _write_failure(self, error):
        try:
            fileio.atomic_write_text(self._marker(self.index, "failed"),
                                     f"{type(error).__name__}: {error}"[:2000])
        except Exception:  # noqa: BLE001  (the original error is the one to report)
            pass

    # ------------------------------------------------------------- task 0
    def merge(self, num_classes: int, top_k: int,
              poll_seconds: float = 1.0) -> metrics.AccuracyCounter:
        """Waits for the counts of every file and adds them up.

        Args:
          num_classes: classes of the models.
          top_k: the k of the counts.
          poll_seconds: how often the folder is looked at.

        Returns:
          The merged `metrics.AccuracyCounter`.

        Raises:
          TaskFailedError: a task with files left wrote a `.failed` file, or
            its heartbeat stood still for `task_timeout` seconds. A `.failed`
            file older than this task's start is an earlier run's: the
            task, restarted beside this one, removes it when it starts, so
            it counts only after `RESTART_GRACE_SECONDS` (at most the
            timeout).
          StaleCountsError: counts of another evaluation.
        """
        counter = metrics.AccuracyCounter(num_classes, top_k)
        pending = list(self.files)
        beats = {}  # task -> (heartbeat text, when it last changed on this clock)
        self._merge_started = time.monotonic()
        while True:
            waiting = []
            for file in pending:
                counts = self._read_counts(file)
                if counts is None:
                    waiting.append(file)
                else:
                    counter.add_counts(counts)
            pending = waiting
            if not pending:
                return counter
            owners = sorted({self.files.index(f) % self.num_tasks for f in pending})
            for task in owners:
                self._check_task(task, beats, len([f for f in pending if
                                                   self.files.index(f) % self.num_tasks == task]))
            time.sleep(poll_seconds)

    def _check_task(self, task, beats, missing):
        failed = self._marker(task, "failed")
        rerun = ("Run that task again with the same command (it skips the files already "
                 f"scored), and this one: the counts in {self.folder} are kept.")
        if fileio.exists(failed) and not self._maybe_restarting(failed):
            raise TaskFailedError(f"evaluation task {task} failed with {missing} file(s) left "
                                  f"({fileio.read_text(failed).strip()}). {rerun}")
        heartbeat = self._marker(task, "heartbeat")
        text = fileio.read_text(heartbeat) if fileio.exists(heartbeat) else None
        now = time.monotonic()
        if task not in beats or beats[task][0] != text:
            beats[task] = (text, now)
        elif now - beats[task][1] > self.task_timeout:
            state = ("never started" if text is None else "stopped beating its heartbeat")
            raise TaskFailedError(
                f"evaluation task {task} {state} for {self.task_timeout:.0f} s with {missing} "
                f"file(s) left (its process died or its machine is gone). {rerun}")

    def _maybe_restarting(self, failed):
        """True while `failed` may be an earlier run's, its task restarting now."""
        grace = min(RESTART_GRACE_SECONDS, self.task_timeout)
        return (time.monotonic() - self._merge_started < grace
                and 0 < fileio.modified_time_ns(failed) < self.started)

    # -------------------------------------------------------------- files
    def _marker(self, task, kind):
        return _marker(self.folder, task, kind)

    def _read_counts(self, file) -> Optional[Dict]:
        path = counts_path(self.folder, file)
        if not fileio.exists(path):
            return None
        values = fileio.read_json(path)
        if values.get("evaluation") != self.identity or values.get("file") != file:
            raise StaleCountsError(
                f"{path} holds the counts of another evaluation (other models, protocol, "
                f"labels or data); delete {self.folder} or write the report elsewhere "
                "(--output).")
        return values["counts"]


class _Heartbeat:
    """Rewrites a file with a fresh token every `interval` seconds while in use."""

    def __init__(self, path: str, interval: float):
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self):
        fileio.atomic_write_text(self._path, f"{os.getpid()} {uuid.uuid4().hex}\n")

    def _run(self):
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001  (a missed beat is retried)
                logging.warning("heartbeat %s not written: %s", self._path, error)

    def __enter__(self):
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
