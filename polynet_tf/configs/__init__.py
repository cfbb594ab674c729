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
    "parse_overrides",
    "write_yaml",
]
