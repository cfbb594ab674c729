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


def test_the_evaluator_task_is_told_it_has_nothing_to_do(monkeypatch):
    from polynet_tf.training.cluster import EvaluatorTaskError

    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["c:1"], "worker": ["w:1"], "evaluator": ["e:1"]},
        "task": {"type": "evaluator", "index": 0}}))
    with pytest.raises(EvaluatorTaskError, match="evaluator has nothing to do"):
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
