"""The run layout (`polynet_tf.runs`): where a run's files are, and reading summaries back."""

import pytest

from polynet_tf import runs
from polynet_tf.training.reporting import Reporter


def test_every_path_of_a_run_is_under_its_model_dir_on_any_uri():
    model_dir = "gs://bucket/run"
    assert runs.params_path(model_dir) == "gs://bucket/run/params.yaml"
    assert runs.checkpoints_dir(model_dir) == "gs://bucket/run/checkpoints"
    assert runs.summaries_dir(model_dir, "train") == "gs://bucket/run/train"
    assert runs.summaries_dir(model_dir, "eval") == "gs://bucket/run/eval"


def test_an_unknown_kind_of_summaries_names_it():
    with pytest.raises(ValueError, match="'validation'"):
        runs.summaries_dir("/tmp/run", "validation")


def test_what_the_trainer_reports_is_read_back_from_the_run_layout():
    model_dir = "ram://test_runs/run"
    reporter = Reporter(model_dir, enabled=True, total_steps=20, initial_step=0)
    try:
        reporter.scalars("train", 10, {"loss": 2.5, "top1": 0.25})
        reporter.scalars("train", 20, {"loss": 1.5, "top1": 0.5})
        reporter.scalars("eval", 20, {"top1": 0.375})
    finally:
        reporter.close()
    train = runs.read_scalars(runs.summaries_dir(model_dir, "train"))
    evaluation = runs.read_scalars(runs.summaries_dir(model_dir, "eval"))
    assert train["loss"] == [(10, 2.5), (20, 1.5)]
    assert train["top1"] == [(10, 0.25), (20, 0.5)]
    assert evaluation == {"top1": [(20, 0.375)]}
