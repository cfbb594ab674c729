import glob
import os

import pytest
import yaml

from polynet_tf.configs import ConfigError, ExperimentConfig, load_experiment, parse_overrides
from polynet_tf.configs.base import from_dict
from tests.training.conftest import ROOT, TINY_CONFIG

OFFICIAL = sorted(glob.glob(os.path.join(ROOT, "official_configs", "*.yaml")))
DATA = "train_data.file_pattern=/d/train-*,eval_data.file_pattern=/d/val-*"


@pytest.mark.parametrize("path", OFFICIAL, ids=os.path.basename)
def test_every_official_config_validates(path):
    config = load_experiment([path], DATA, mode="train_and_eval")
    assert config.train_data.is_training and not config.eval_data.is_training


def test_the_papers_setups():
    deep = load_experiment([os.path.join(ROOT, "official_configs", "very_deep_imagenet.yaml")])
    assert (deep.model.architecture, deep.train_data.image_size) == ("very_deep", 331)
    assert deep.train_data.global_batch_size == 512
    assert (deep.optimizer.rho, deep.optimizer.momentum, deep.optimizer.epsilon) == (0.9, 0.9, 1.0)
    assert (deep.schedule.base_learning_rate, deep.schedule.decay_steps) == (0.45, 160000)
    assert deep.trainer.train_steps == 560000
    ir = load_experiment([os.path.join(ROOT, "official_configs", "ir_5_10_5_imagenet.yaml")])
    assert (ir.train_data.image_size, ir.train_data.global_batch_size) == (299, 256)


def test_later_files_and_overrides_win(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  num_classes: 7\ntrainer:\n  train_steps: 50\n")
    config = load_experiment([TINY_CONFIG, str(extra)],
                             DATA + ",trainer.train_steps=9,optimizer.label_smoothing=0.1")
    assert config.model.num_classes == 7
    assert config.trainer.train_steps == 9
    assert config.optimizer.label_smoothing == 0.1
    first = yaml.safe_load(open(TINY_CONFIG))
    assert config.model.architecture == first["model"]["architecture"]  # from the first file


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.archtecture=x", "Unknown configuration key 'model.archtecture'"),
        ("trainer.train_step=3", "Unknown configuration key 'trainer.train_step'"),
        ("trainer.train_steps=many", "'trainer.train_steps' must be an integer"),
        ("trainer.train_steps=0", "'trainer.train_steps' must be positive"),
        ("model.architecture=very_deeep", "'model.architecture'"),
        ("optimizer.name=lamb", "'optimizer.name' must be one of"),
        ("model.drop_path_rate=1.5", "'model.drop_path_rate' must be in"),
        ("train_data.image_sise=3", "image_sise"),
        ("runtime.distribution_strategy=tpu", "'runtime.distribution_strategy'"),
        ("trainer.batch_norm_kernel=cudnn", "'trainer.batch_norm_kernel' must be one of"),
        ("trainer.adaptive_drop_path.gap=1", "'trainer.adaptive_drop_path.gap'"),
        ("runtime.intra_op_threads=-1", "'runtime.intra_op_threads' must be >= 0"),
        ("runtime.inter_op_threads=two", "'runtime.inter_op_threads' must be an integer"),
        ("novalue", "not of the form key=value"),
    ],
)
def test_bad_configuration_names_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_experiment([TINY_CONFIG], DATA + "," + override)
    assert fragment in str(info.value)


def test_missing_data_source_and_file():
    with pytest.raises(ConfigError, match="'train_data' needs a source"):
        load_experiment([TINY_CONFIG])
    with pytest.raises(ConfigError, match="Configuration file not found"):
        load_experiment(["/no/such.yaml"])


def test_overrides_parse_yaml_values():
    assert parse_overrides("a.b=1,c=[1, 2],d=x,e=0.5,f=true,g={k: 1}") == {
        "a": {"b": 1}, "c": [1, 2], "d": "x", "e": 0.5, "f": True, "g": {"k": 1}}


def test_round_trip_through_yaml(tmp_path):
    config = load_experiment([TINY_CONFIG], DATA)
    text = yaml.safe_dump(config.to_dict())
    again = from_dict(ExperimentConfig, yaml.safe_load(text))
    assert again.to_dict() == config.to_dict()


def test_only_the_data_a_mode_uses_must_be_set():
    train_only = load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/train-*", mode="train")
    assert train_only.eval_data.file_pattern == ""
    with pytest.raises(ConfigError, match="'eval_data' needs a source"):
        load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/train-*", mode="train_and_eval")
    with pytest.raises(ConfigError, match="In 'train_data'.*image_size"):
        load_experiment([TINY_CONFIG], DATA + ",train_data.image_size=-3")


def test_an_architecture_spec_can_be_overridden():
    config = load_experiment([TINY_CONFIG], DATA + ",model.architecture=A: 2way | B: poly3 | C: ir")
    assert config.model.architecture == "A: 2way | B: poly3 | C: ir"


def test_written_yaml_has_the_permissions_of_a_new_file(tmp_path):
    from polynet_tf.configs import write_yaml  # noqa: PLC0415

    path = tmp_path / "run" / "params.yaml"
    write_yaml({"model": {"num_classes": 3}}, str(path))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert yaml.safe_load(path.read_text()) == {"model": {"num_classes": 3}}
    assert os.listdir(path.parent) == ["params.yaml"]



def test_threads_default_to_tensorflows_choice():
    config = load_experiment([TINY_CONFIG], DATA + ",runtime.intra_op_threads=1")
    assert (config.runtime.intra_op_threads, config.runtime.inter_op_threads) == (1, 0)


def test_evaluation_takes_the_runs_network_and_the_flags_data(tmp_path):
    from polynet_tf.configs import load_for_evaluation, write_yaml  # noqa: PLC0415

    trained = load_experiment([TINY_CONFIG], DATA + ",model.num_classes=4")
    params = tmp_path / "params.yaml"
    write_yaml(trained.to_dict(), str(params))
    written = params.read_bytes()
    config, ignored = load_for_evaluation(
        str(params), [TINY_CONFIG],
        "model.num_classes=7,eval_data.file_pattern=/other/val-*,trainer.eval_steps=3")
    assert config.model == trained.model
    assert ignored == ["model.num_classes=7 (params.yaml: 4)"]
    assert (config.eval_data.file_pattern, config.trainer.eval_steps) == ("/other/val-*", 3)
    # Nothing from the flags: the run's configuration as it was.
    alone, none = load_for_evaluation(str(params))
    assert alone.to_dict() == trained.to_dict() and none == []
    assert params.read_bytes() == written
