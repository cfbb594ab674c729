"""The demo: its quick run works end to end, and the README shows the commands it runs."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from polynet_tf.demo import pipeline
from polynet_tf.runs import final_eval_result

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
START_MARKER = "<!-- demo-commands:start -->"
END_MARKER = "<!-- demo-commands:end -->"


def _demo_script():
    spec = importlib.util.spec_from_file_location("demo_script",
                                                  os.path.join(ROOT, "scripts", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_commands():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if START_MARKER not in text or END_MARKER not in text:
        pytest.fail(f"README.md has no demo command block: put the output of "
                    f"`python scripts/demo.py --print_commands` in a ```bash block between "
                    f"{START_MARKER} and {END_MARKER}.")
    block = text.split(START_MARKER, 1)[1].split(END_MARKER, 1)[0]
    return [line.rstrip() for line in block.splitlines()
            if line.strip() and not line.startswith("```") and not line.startswith("#")]


def test_readme_shows_the_commands_the_demo_runs():
    options, print_only = _demo_script().parse_options(["--print_commands"])
    assert print_only
    expected = pipeline.shell_lines(pipeline.commands(options))
    assert _readme_commands() == expected, (
        "README.md's demo block differs from `python scripts/demo.py --print_commands`; "
        "paste that output between the markers.")


def test_print_commands_lists_every_step_with_the_readme_ports(capsys):
    assert _demo_script().main(["--print_commands"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == pipeline.shell_lines(pipeline.commands(pipeline.DemoOptions()))
    workers = [line for line in printed if " -m polynet_tf.train " in line]
    assert [line.endswith(" &") for line in workers] == [True, False]
    assert all("--worker_hosts localhost:12345,localhost:12346" in line for line in workers)
    assert printed[printed.index(workers[-1]) + 1] == "wait"


def test_every_step_runs_there_is_no_pending_mechanism():
    assert not hasattr(pipeline, "module_available")
    assert [f.name for f in pipeline.dataclasses.fields(pipeline.Step)] == ["title", "commands"]


def test_usage_errors_of_the_demo_script(capsys):
    assert _demo_script().main(["--num_workers=0"]) == 2
    assert "--num_workers" in capsys.readouterr().err
    assert _demo_script().main(["--help"]) == 0


def test_an_existing_work_dir_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="was not made by the demo"):
        pipeline.run_demo(pipeline.DemoOptions(work_dir=str(tmp_path / "mine")), log=lambda _: 0)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    # --fresh replaces only a folder the demo made (it holds the marker file).
    with pytest.raises(FileExistsError, match="was not made by the demo"):
        pipeline.run_demo(pipeline.DemoOptions(work_dir=str(tmp_path / "mine"), fresh=True),
                          log=lambda _: 0)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / pipeline.MARKER_FILE).write_text("")
    (earlier / "old.txt").write_text("")
    with pytest.raises(FileExistsError, match="pass --fresh"):
        pipeline.run_demo(pipeline.DemoOptions(work_dir=str(earlier)), log=lambda _: 0)
    # With --fresh the earlier run goes; a failing first step (bad size) then stops the demo.
    lines = []
    with pytest.raises(pipeline.StepFailed, match="polynet_tf.demo.digits .* exited with status 2"):
        pipeline.run_demo(pipeline.DemoOptions(work_dir=str(earlier), fresh=True,
                                               max_per_class=1), log=lines.append)
    assert sorted(os.listdir(earlier)) == [pipeline.MARKER_FILE]
    assert lines[0] == f"$ rm -r {earlier}"


@pytest.mark.slow
def test_quick_demo_runs_every_step_and_learns(tmp_path):
    work_dir = str(tmp_path / "demo")
    argv = ["--quick", "--work_dir", work_dir]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    environment.pop("TF_CONFIG", None)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), *argv],
                            capture_output=True, text=True, timeout=1200, env=environment,
                            cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]

    # What ran is exactly the documented command list, in order, every step timed.
    shown = [line[2:] for line in result.stdout.splitlines() if line.startswith("$ ")]
    ports = [int(p) for p in re.search(r"--worker_hosts localhost:(\d+),localhost:(\d+)",
                                       result.stdout).groups()]
    options, _ = _demo_script().parse_options(argv)
    expected = pipeline.shell_lines(pipeline.commands(options, ports))
    assert shown == expected
    steps = pipeline.commands(options, ports)
    timed = [line for line in result.stdout.splitlines() if re.fullmatch(r"--- [0-9.]+ s", line)]
    assert len(timed) == len(steps) and f"{len(steps)} of {len(steps)} steps" in result.stdout
    assert "PENDING" not in output and "skipped" not in result.stdout.lower()

    # Clearly better than chance (10 classes): the evaluator's single crop, or the trainer's.
    result_single = final_eval_result(os.path.join(work_dir, "run"), protocol="single")
    assert result_single.top1 >= 0.5, result_single
    report = os.path.join(work_dir, "report")
    for name in ("training_curves.png", "accuracy_vs_cost.png"):
        with open(os.path.join(report, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.exists(os.path.join(report, "crops.png"))
    with open(os.path.join(work_dir, "run", "evaluation_polynet_multicrop.json")) as f:
        assert json.load(f)["num_images"] == 10
    assert os.path.exists(os.path.join(report, "predictions.png"))
    served = re.search(r"served model accuracy on (\d+) held-out images: ([0-9.]+)",
                       result.stdout)
    assert served, output[-3000:]
    assert int(served.group(1)) == 40 and float(served.group(2)) >= 0.5, served.group(0)
    # The int8 LiteRT model: checked at export on training images it was not calibrated on,
    # then run on the held-out digits beside the SavedModel.
    exported = re.search(r"int8: [0-9.]+ MiB, ([0-9.]+)x the float32 file .* top-1 agreement "
                         r"with the float model on 64 held-out images: ([0-9.]+)%", result.stdout)
    assert exported, output[-3000:]
    assert float(exported.group(1)) < 0.4 and float(exported.group(2)) >= 99.0, exported.group(0)
    int8 = re.search(r"int8 litert model accuracy on 40 held-out images: ([0-9.]+) \(SavedModel: "
                     r"([0-9.]+)\); top-1 agreement with the SavedModel: ([0-9.]+)", result.stdout)
    assert int8, output[-3000:]
    assert float(int8.group(2)) == float(served.group(2))
    assert float(int8.group(3)) >= 0.99 and float(int8.group(1)) >= 0.5, int8.group(0)
