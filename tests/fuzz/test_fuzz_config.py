"""Fuzzing the configuration loader with mutated YAML text and override strings.

`load_experiment` must return an `ExperimentConfig` or raise `ConfigError`
naming the key or file, for every mutation of a shipped configuration file
and of an override string: no other exception, no hang.
"""

import os

from polynet_tf.configs import ConfigError, load_experiment
from tests.fuzz.mutation import mutate, run_cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = ("trainer.train_steps=100,model.num_classes=10,train_data.image_size=75,"
             "schedule.decay_steps=[1,2],model.architecture=A: ir | B: 2way*2 | C: ir")


def test_mutated_yaml_and_overrides(tmp_path):
    texts = [open(os.path.join(ROOT, "official_configs", name), "rb").read()
             for name in ("tiny_cpu.yaml", "digits_demo.yaml")]
    path = str(tmp_path / "case.yaml")
    outcomes = {"loaded": 0, "refused": 0}

    def make_case(rng, number):
        if number % 2:
            return None, mutate(OVERRIDES.encode(), rng).decode("utf-8", "replace")
        return mutate(texts[(number // 2) % 2], rng), ""

    def check(case):
        text, override = case
        files = []
        if text is not None:
            with open(path, "wb") as f:
                f.write(text)
            files = [path]
        else:
            files = [os.path.join(ROOT, "official_configs", "tiny_cpu.yaml")]
        try:
            load_experiment(files, override, mode=None)
        except ConfigError as error:
            assert str(error), "an empty message"
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1

    count = run_cases(make_case, check, min_cases=1000, case_seconds=20)
    assert count >= 1000 and outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes
