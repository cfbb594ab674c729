"""Experiment configuration as validated data (dataclasses + YAML)."""

from polynet_tf.configs.base import ConfigError, parse_overrides, write_yaml
from polynet_tf.configs.experiment import (
    AdaptiveDropPathConfig,
    ExperimentConfig,
    InitConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    ScheduleConfig,
    TrainerConfig,
    load_experiment,
    load_for_evaluation,
)

__all__ = [
    "AdaptiveDropPathConfig",
    "ConfigError",
    "ExperimentConfig",
    "InitConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TrainerConfig",
    "load_experiment",
    "load_for_evaluation",
    "parse_overrides",
    "write_yaml",
]
