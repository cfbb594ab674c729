import json

import pytest

from polynet_tf.training.cluster import configure_cluster


@pytest.fixture(autouse=True)
def _no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


def test_worker_hosts_become_tf_config(monkeypatch):
    assert configure_cluster("h1:2222,h2:2223", 1) == (2, 1)
    import os

    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["h1:2222", "h2:2223"]}, "task": {"type": "worker", "index": 1}}


def test_an_existing_tf_config_wins(monkeypatch):
    config = {"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
              "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert configure_cluster("h1:2222,h2:2223", 0) == (3, 2)


def test_one_worker_needs_no_cluster():
    import os

    assert configure_cluster("", 0) == (1, 0)
    assert "TF_CONFIG" not in os.environ


@pytest.mark.parametrize(
    "hosts, index, fragment",
    [("h1,h2:1", 0, "'h1' is not of the form host:port"),
     ("h1:1,h2:2", 2, "--task_index=2 is out of range"),
     ("", 1, "needs --worker_hosts")],
)
def test_bad_flags(hosts, index, fragment):
    with pytest.raises(ValueError, match=fragment):
        configure_cluster(hosts, index)


def test_bad_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        configure_cluster()


def test_a_tfjob_chief_and_workers_leave_the_evaluator_out(monkeypatch):
    import os

    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"], "evaluator": ["e:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "chief", "index": 0}}))
    assert configure_cluster() == (3, 0)
    assert json.loads(os.environ["TF_CONFIG"])["cluster"] == {
        "chief": ["c:1"], "worker": ["w:1", "w:2"]}


def test_the_evaluator_task_is_no_training_task(monkeypatch):
    from polynet_tf.training.cluster import EvaluatorTaskError

    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["c:1"], "worker": ["w:1"], "evaluator": ["e:1"]},
        "task": {"type": "evaluator", "index": 0}}))
    with pytest.raises(EvaluatorTaskError, match="'evaluator': it takes no part in training"):
        configure_cluster()


@pytest.mark.parametrize("tf_config, fragment", [
    ({"cluster": {"ps": ["p:1"], "worker": ["w:1"]}, "task": {"type": "worker", "index": 0}},
     "no parameter servers"),
    ({"cluster": {"chief": ["c:1", "c:2"]}, "task": {"type": "chief", "index": 0}},
     "2 chief tasks"),
])
def test_unsupported_layouts(monkeypatch, tf_config, fragment):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(ValueError, match=fragment):
        configure_cluster()


# Error texts as TensorFlow 2.21 words them (trimmed), from two-worker runs.
_HEARTBEATS = (
    "Graph execution error:\n\nCollective ops is aborted by: Error reported from "
    "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
    "The tasks have crashed. Check the task logs for an earlier error, or scheduler events "
    "(e.g. preemption, eviction) to debug further.\nThe error could be from a previous "
    "operation. Restart your program to reset.")
_SERVICE_GONE = ("Graph execution error:\n\nDetected at node rm_sprop/CollectiveReduceV2\n"
                 "Collective ops is aborted by: Deadline Exceeded\n\n"
                 "RPC: /tensorflow.CoordinationService/Heartbeat\n")
_BAD_LABEL = (
    "Graph execution error:\n\nError in user-defined function passed to ParallelMapDatasetV2:4 "
    "transformation with iterator: Iterator::Root::Prefetch::ParallelMapV2: assertion failed: "
    "[polynet_tf.data: label 7 (after subtracting label_offset) of file /d/train-00001 record 1 "
    "is outside [0, 4). Shards written by TensorFlow\\'s ImageNet tools store labels 1..1000.]\n"
    "\t [[IteratorGetNextAsOptional]] [Op:__inference_run_step_15077]")
_PEER_BAD_LABEL = ("Graph execution error:\nCollective ops is aborted by: Error reported from "
                   "/job:worker/task:1: " + _BAD_LABEL)


@pytest.fixture
def _two_hosts(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 0}}))


@pytest.mark.parametrize("text, peer, what", [
    (_HEARTBEATS, "/job:worker/task:1 (10.0.0.2:2222)", "stopped sending heartbeats for 10 s"),
    (_SERVICE_GONE, "/job:worker/task:0 (10.0.0.1:2222)",
     "stopped answering this worker's heartbeats (it hosts the coordination service"),
    (_PEER_BAD_LABEL, "/job:worker/task:1 (10.0.0.2:2222)",
     "met bad data: label 7 (after subtracting label_offset) of file /d/train-00001 record 1 "
     "is outside [0, 4). Shards written by TensorFlow's ImageNet tools store labels 1..1000."),
])
def test_the_failed_peer_is_named_with_what_happened(_two_hosts, text, peer, what):
    from polynet_tf.training.cluster import peer_failure

    named, happened = peer_failure(text)
    assert named == peer
    assert happened.startswith(what), happened


def test_bad_data_met_here_is_not_a_peer_failure(_two_hosts):
    from polynet_tf.training.cluster import data_error, peer_failure

    assert peer_failure(_BAD_LABEL) is None
    assert data_error(_BAD_LABEL) == (
        "label 7 (after subtracting label_offset) of file /d/train-00001 record 1 is outside "
        "[0, 4). Shards written by TensorFlow's ImageNet tools store labels 1..1000.")
    assert data_error(_HEARTBEATS) is None
