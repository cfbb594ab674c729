"""Cluster set-up: `--worker_hosts`/`--task_index` to TF_CONFIG, and the strategy.

As TF Model Garden's `configure_cluster`: a TF_CONFIG already in the
environment wins; otherwise several worker hosts become one. TF_CONFIG may
describe workers only, or a `chief` plus `worker` tasks (as Kubeflow's TFJob
writes it), optionally with an `evaluator`: the chief (else worker 0) writes;
the chief and the workers train together; an evaluator takes no part in
training (see `EvaluatorTaskError`): it evaluates their checkpoints.

Exit statuses of `python -m polynet_tf.train`: 0 done, 2 bad configuration
or command line, `EXIT_PEER_FAILED` (3) a peer died, could not be reached or
met bad data, 4 training diverged, `EXIT_BAD_DATA` (5) this worker met a bad
record or label, `EXIT_PREEMPTED` (143) stopped by SIGTERM after saving.

Several workers: the coordination service (hosted by the chief, else worker
0) takes a heartbeat from every worker; one silent for
`HEARTBEAT_TIMEOUT_SECONDS` (a lost machine, a partition) is reported to
every worker, whose step then fails: that bounds how long a lost peer goes
unnoticed, whatever `runtime.collective_timeout_seconds` is.
"""

import json
import os
import re
import subprocess
import sys

import tensorflow as tf
from absl import logging

# Exit status of a worker that lost its peers during training. One that never
# reached them is killed by the start-up watchdog (status -9 / 137).
EXIT_PEER_FAILED = 3
# Exit status of the worker that met a bad record or an out-of-range label
# (data.on_error=fail); its peers exit with EXIT_PEER_FAILED.
EXIT_BAD_DATA = 5
# Exit status of every worker after a SIGTERM (to any one of them) made them
# all save a checkpoint at the same step: 128 + SIGTERM, as a killed process.
EXIT_PREEMPTED = 143

_TRAINING_TASK_TYPES = ("chief", "worker")

# A worker whose heartbeats stop this long is reported lost to every worker
# (TensorFlow's default is 10 s too; set here so the documented bound holds).
HEARTBEAT_TIMEOUT_SECONDS = 10
# How long the workers wait for each other when they leave together.
_EXIT_BARRIER_SECONDS = 60
# How long the leader waits, after such a barrier, for each peer to say it got through.
_LEADER_WAIT_SECONDS = 30


class EvaluatorTaskError(RuntimeError):
    """This process is TF_CONFIG's `evaluator`: not a training task.

    `python -m polynet_tf.train` runs the continuous evaluator there
    (`polynet_tf.evaluation.continuous`).
    """


def configure_cluster(worker_hosts="", task_index=0):
    """Writes TF_CONFIG from the flags unless it is already set.

    Args:
        worker_hosts: comma-separated "host:port" list, the same on every worker.
        task_index: this worker's index in that list.

    Returns:
        (number of workers, this worker's index).

    Raises:
        ValueError: a malformed host list or task index, or a TF_CONFIG that
            is not JSON.
    """
    if os.environ.get("TF_CONFIG"):
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        cluster_spec = tf_config.get("cluster", {})
        workers = cluster_spec.get("worker", [])
        chief = cluster_spec.get("chief", [])
        task = tf_config.get("task", {})
        task_type = task.get("type", "worker")
        index = int(task.get("index", 0))
        if task_type == "evaluator":
            raise EvaluatorTaskError(
                "This task is TF_CONFIG's 'evaluator': it takes no part in training and "
                "evaluates the checkpoints the chief writes (--mode=continuous_eval).")
        unknown = sorted(set(cluster_spec) - set(_TRAINING_TASK_TYPES) - {"evaluator"})
        if task_type not in _TRAINING_TASK_TYPES or unknown:
            raise ValueError(
                f"TF_CONFIG task type {task_type!r} / cluster jobs {sorted(cluster_spec)}: "
                "only 'chief', 'worker' and 'evaluator' are supported (synchronous "
                "training; no parameter servers).")
        if len(chief) > 1:
            raise ValueError(f"TF_CONFIG has {len(chief)} chief tasks; at most one is allowed.")
        if "evaluator" in cluster_spec:
            # The evaluator must not join the collective group: the strategy
            # would wait for it at start-up.
            tf_config["cluster"] = {k: v for k, v in cluster_spec.items() if k != "evaluator"}
            os.environ["TF_CONFIG"] = json.dumps(tf_config)
        if task_type == "worker" and chief:
            index += len(chief)
        if worker_hosts:
            logging.warning("TF_CONFIG is set: ignoring --worker_hosts=%s", worker_hosts)
        return max(1, len(workers) + len(chief)), index
    hosts = [host.strip() for host in worker_hosts.split(",") if host.strip()]
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(
                f"--worker_hosts entry {host!r} is not of the form host:port "
                "(e.g. --worker_hosts=10.0.0.1:2222,10.0.0.2:2222)")
    if len(hosts) <= 1:
        if task_index not in (0, None):
            raise ValueError(
                f"--task_index={task_index} needs --worker_hosts with more than one host")
        return 1, 0
    if not 0 <= task_index < len(hosts):
        raise ValueError(
            f"--task_index={task_index} is out of range for {len(hosts)} worker hosts")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}})
    return len(hosts), task_index


def make_strategy(runtime_config, num_workers):
    """The distribution strategy for this process.

    Several workers: `MultiWorkerMirroredStrategy` with collective timeouts,
    so a dead or unreachable peer ends the job with an error instead of a
    hang. One worker: `MirroredStrategy` over the local devices (or
    `OneDeviceStrategy` when asked).

    Args:
        runtime_config: a `RuntimeConfig`.
        num_workers: from `configure_cluster`.

    Returns:
        A `tf.distribute.Strategy`.
    """
    kind = runtime_config.distribution_strategy
    if kind == "auto":
        kind = "multi_worker" if num_workers > 1 else "mirrored"
    if kind == "multi_worker":
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[runtime_config.communication]
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=implementation,
            timeout_seconds=runtime_config.collective_timeout_seconds,
            # Gradients travel in a few large packs instead of one all-reduce
            # per variable (hundreds per step).
            bytes_per_pack=32 * 1024 * 1024,
        )
        _configure_coordination_service()
        return _within_deadline(
            lambda: tf.distribute.MultiWorkerMirroredStrategy(communication_options=options),
            runtime_config.startup_timeout_seconds)
    if kind == "one_device":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.OneDeviceStrategy(devices[0].name)
    return tf.distribute.MirroredStrategy()


def _configure_coordination_service():
    """The coordination service as MultiWorkerMirroredStrategy sets it up, with our timeouts.

    The strategy configures the service only when nothing did before; the
    same jobs and leader here, plus the heartbeat timeout (the lost-peer
    bound).
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # noqa: PLC0415
    from tensorflow.python.distribute import multi_worker_util  # noqa: PLC0415
    from tensorflow.python.eager import context  # noqa: PLC0415

    cluster_spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
            for job in _TRAINING_TASK_TYPES if job in cluster_spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000)


def wait_for_all_workers(name, task, num_workers):
    """Blocks until every worker reaches the barrier `name`; the leader returns last.

    The leader (task 0) hosts the coordination service: were it to exit as
    soon as the barrier passed, a peer's answer from the barrier could be lost
    with it, and that peer would report the leader lost (exit 3) although
    every worker got through. So each peer, once through, says so in the
    service's key-value store, and the leader waits for those words (at most
    `_LEADER_WAIT_SECONDS`) before it returns.

    Args:
        name: the barrier's id, the same on every worker, used once per job.
        task: this worker's index among the training tasks (0: the leader).
        num_workers: worker processes in the job (one: returns at once).
    """
    if num_workers <= 1:
        return
    from tensorflow.python.eager import context  # noqa: PLC0415

    service = context.context()
    service.wait_at_barrier(name, _EXIT_BARRIER_SECONDS * 1000)
    if task != 0:
        try:
            service.set_config_key_value(f"{name}/through/{task}", "1")
        except tf.errors.OpError:
            pass  # the leader stopped waiting; this worker is through all the same
        return
    for peer in range(1, num_workers):
        try:
            service.get_config_key_value(f"{name}/through/{peer}", _LEADER_WAIT_SECONDS * 1000)
        except tf.errors.OpError as error:
            logging.warning("worker %d passed barrier %s but did not say so within %d s (%s); "
                            "leaving anyway", peer, name, _LEADER_WAIT_SECONDS,
                            str(error).splitlines()[0][:200])
            return


_TASK = r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)"


def peer_failure(error_text):
    """Which peer failed and how, from the text of a step's error, if another worker's.

    A step's error on one worker reaches the others through the coordination
    service ("Error reported from /job:worker/task:1: ..."), as does a worker
    whose heartbeats stopped; a worker that cannot reach the service (the
    chief's) fails its own heartbeat call.

    Args:
        error_text: `str()` of the error.

    Returns:
        (peer, what): the peer as "/job:worker/task:1 (host:port)" and what
        happened to it, in words; None when the error names no peer.
    """
    reported = re.search("Error reported from " + _TASK, error_text)
    if reported:
        job, index = reported.group(1), int(reported.group(2))
    elif "CoordinationService/Heartbeat" in error_text:
        leader = "chief" if _cluster_spec().get("chief") else "worker"
        job, index = leader, 0
    else:
        return None
    if "stopped sending heartbeats" in error_text:
        what = (f"stopped sending heartbeats for {HEARTBEAT_TIMEOUT_SECONDS} s (its machine "
                "is gone or the network between the workers is cut)")
    elif reported is None:
        what = ("stopped answering this worker's heartbeats (it hosts the coordination "
                "service; its machine is gone or the network between the workers is cut)")
    elif data_error(error_text):
        what = "met bad data: " + data_error(error_text)
    else:
        lines = [line.strip() for line in error_text[reported.end():].splitlines()]
        lines = [line.lstrip(": ") for line in lines if line.strip(": ") and
                 "Graph execution error" not in line]
        what = "failed: " + (lines[0][:300] if lines else "(no message)")
    hosts = _cluster_spec().get(job, [])
    where = f" ({hosts[index]})" if index < len(hosts) else ""
    return f"/job:{job}/task:{index}{where}", what


def data_error(error_text):
    """The input pipeline's message in an error's text ("file ... record ...: ..."), or None.

    The pipeline stops on a bad record with an assertion whose message starts
    with "polynet_tf.data: "; TensorFlow brackets it and escapes its quotes.
    """
    found = re.search(r"polynet_tf\.data: (.*?)\]?\s*(?:\n|$)", error_text)
    return found.group(1).replace("\\'", "'") if found else None


def _cluster_spec():
    return json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})


def is_chief(strategy):
    """True for the worker that writes checkpoints, summaries and logs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


def task_id(strategy):
    """This task's index among all training tasks: chief 0, then the workers.

    The same numbering as tf.distribute's input pipelines, so that a chief
    and worker 0 never share an index (or a temporary directory).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_id is None or not resolver.cluster_spec().as_dict():
        return 0
    index = int(resolver.task_id)
    if resolver.task_type == "worker" and "chief" in resolver.cluster_spec().as_dict():
        index += len(resolver.cluster_spec().as_dict()["chief"])
    return index


def _within_deadline(create, seconds):
    """Runs `create`; ends the process with a clear error if it takes too long.

    Creating a MultiWorkerMirroredStrategy waits for every worker to connect,
    with no time limit of its own, inside a C++ call that holds the GIL: a
    wrong host or a worker that never starts would hang the job, and no Python
    thread or signal handler of this process could intervene. A small watchdog
    process prints the error and ends this one when the deadline passes.
    """
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    message = (
        f"error: not every worker connected within {seconds:.0f} s (cluster: {cluster}). "
        "Check that every host:port is right and reachable from this machine and that "
        "every worker was started with the same --worker_hosts and its own --task_index "
        "(the limit is runtime.startup_timeout_seconds).")
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message],
        stdin=subprocess.DEVNULL)
    try:
        return create()
    finally:
        watchdog.kill()
        watchdog.wait()


_WATCHDOG = """
import os, signal, sys, time
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
print(message, file=sys.stderr, flush=True)
os.kill(pid, signal.SIGKILL)
"""


def set_threads(runtime_config):
    """Sizes TensorFlow's thread pools from `runtime.intra_op_threads` / `inter_op_threads`.

    Must run before the first TensorFlow op (the pools are made then); 0
    leaves TensorFlow's default.
    """
    if runtime_config.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(runtime_config.intra_op_threads)
    if runtime_config.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(runtime_config.inter_op_threads)
