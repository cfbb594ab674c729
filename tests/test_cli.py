"""Every command on one command-line library (`polynet_tf.cli`, absl flags).

`--help` exits 0 (run as users run it, as `__main__` in a fresh interpreter),
`--helpfull` lists absl's special flags too, and a bad value is a usage error
(exit 2) whose message names the flag.
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (module or script, a flag of its own, arguments with one bad value, the flag named)
COMMANDS = [
    ("polynet_tf.evaluate", "--protocol", ["--batch_size=many"], "--batch_size"),
    ("polynet_tf.export", "--output_base", ["--output_base=b", "--model_name=m",
                                            "--version=0"], "--version"),
    ("polynet_tf.grow", "--from_architecture", ["--classes=0"], "--classes"),
    ("polynet_tf.data.build_tfrecords", "--num_shards",
     ["--image_dir=a", "--output_dir=b", "--num_shards=1", "--num_threads=0"], "--num_threads"),
    ("polynet_tf.convert_weights", "--source", ["--source=caffe", "--checkpoint=a",
                                                "--output=b.weights.h5"], "--source"),
    ("polynet_tf.plot_runs", "--metric", ["run", "--output=a.png", "--metric=speed"],
     "--metric"),
    ("polynet_tf.demo.digits", "--image_size", ["--output_dir=a", "--image_size=2"],
     "--image_size"),
    ("polynet_tf.demo.predict", "--saved_model", ["--saved_model=a", "--image_dir=b",
                                                  "--show=-1"], "--show"),
    ("polynet_tf.demo.curves", "--model_dir", ["--model_dir=a"], "--output"),
    ("scripts/demo.py", "--print_commands", ["--num_workers=0"], "--num_workers"),
    ("polynet_tf.hub.make_preset", "--weights", ["--weights=w", "--output=o",
                                                 "--classes=ten"], "--classes"),
]


def _main(target):
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location("demo_script", os.path.join(ROOT, target))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main
    name = target + ".__main__" if target == "polynet_tf.grow" else target
    return importlib.import_module(name).main


# Runs each command's `--help` as `python -m` / `python script.py` does (runpy,
# as `__main__`), all in one fresh interpreter: TensorFlow is imported once.
_HELP_RUNNER = textwrap.dedent("""
    import contextlib, io, json, runpy, sys
    results = {}
    for target in sys.argv[1:]:
        sys.argv = [target, "--help"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if target.endswith(".py"):
                    runpy.run_path(target, run_name="__main__")
                else:
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
        results[target] = [code, out.getvalue(), err.getvalue()]
    print("RESULTS " + json.dumps(results))
""")


@pytest.fixture(scope="module")
def help_outputs():
    """target -> (exit status, stdout, stderr) of `--help` run as `__main__`."""
    targets = [os.path.join(ROOT, c[0]) if c[0].endswith(".py") else c[0] for c in COMMANDS]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    shown = subprocess.run([sys.executable, "-c", _HELP_RUNNER, *targets], capture_output=True,
                           text=True, cwd=ROOT, env=environment, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]
    line = [row for row in shown.stdout.splitlines() if row.startswith("RESULTS ")][-1]
    results = json.loads(line[len("RESULTS "):])
    return {os.path.relpath(target, ROOT) if target.endswith(".py") else target: value
            for target, value in results.items()}


@pytest.mark.parametrize("target, own_flag, bad, named", COMMANDS,
                         ids=[c[0] for c in COMMANDS])
def test_help_helpfull_and_usage_errors(target, own_flag, bad, named, capsys, help_outputs):
    code, stdout, stderr = help_outputs[target]
    assert code == 0, stderr[-2000:]
    assert own_flag in stdout and "--helpfull" in stdout
    assert "--flagfile:" not in stdout

    main = _main(target)
    assert main(["--helpfull"]) == 0
    full = capsys.readouterr().out
    assert own_flag in full and "--flagfile:" in full
    assert main(bad) == 2
    error = capsys.readouterr().err
    assert f"error: flag {named}" in error or f"error: {named}" in error, error
    assert "Traceback" not in error
    assert main(["--no_such_flag=1"]) == 2
    assert "no_such_flag" in capsys.readouterr().err


def test_train_on_absl_app_help_exits_0_and_flag_errors_exit_2():
    command = [sys.executable, "-m", "polynet_tf.train"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    shown = subprocess.run(command + ["--help"], capture_output=True, text=True, cwd=ROOT,
                           env=environment, timeout=300)
    assert shown.returncode == 0 and "--model_dir" in shown.stdout, shown.stderr[-2000:]
    refused = subprocess.run(command + ["--task_index=x"], capture_output=True, text=True,
                             cwd=ROOT, env=environment, timeout=300)
    assert refused.returncode == 2
    assert "python -m polynet_tf.train: error: flag --task_index=x" in refused.stderr
