"""The main job end to end: image folders, TFRecords, 2 workers, evaluate, export, predict.

Every step is a command a user would type (`commands`); the demo prints each
one before running it, and `python scripts/demo.py --print_commands` prints
the list the README shows. Every step runs; the first that fails stops the
demo (`StepFailed`, naming the command and its exit status).
"""

import dataclasses
import os
import posixpath
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

# Ports shown in the README; a run takes free ports instead.
README_PORTS = (12345, 12346)
MARKER_FILE = ".polynet_demo"
CONFIG = "official_configs/digits_demo.yaml"
# The evaluator's defaults are ImageNet's (331 crops): the demo network sees 75x75. The paper's
# scales (352..576 for 331, up to 1.74x the crop) would cut corner crops holding a third of a digit.
# The demo's scales stay within the views it trained on (digits_demo.yaml: crops of 60-100% of the
# area): a 75 corner crop of a side-s image holds (75 / s)^2 of it, >= 0.6 for s <= 96
# (docs/demo.md). No digit was mirrored in training (random_flip: false), and a mirrored digit is
# another digit or none: 18 crops per scale leaves the mirror images out.
CROP_SIZE = "75"
MULTICROP_SCALES = "75,78,81,84,87,90,93,96"
MULTICROP_CROPS_PER_SCALE = "18"
# The int8 export calibrates on the first training records (128: with 16 or 64, one of the quick
# demo's 40 held-out digits changed its answer) and reports its agreement with
# the float model on the next ones (the held-out digits are classified in the next step).
INT8_CALIBRATION_IMAGES = "128"
INT8_HELD_OUT_IMAGES = "64"


@dataclasses.dataclass
class DemoOptions:
    """Sizes and places of one demo run.

    Attributes:
        work_dir: everything goes here (digits, records, run, serving, report).
        config: training configuration.
        image_size: side of the written digit JPEGs.
        max_per_class: fewer digits per class (None: all 1797 digits).
        train_steps: None keeps the configuration's.
        overrides: further `--params_override` items, e.g. "model.width_multiplier=0.0625".
        num_workers: training processes on localhost.
        multicrop_protocol: the evaluator's multi-crop protocol.
        multicrop_max_images: evaluate multi-crop on the first N validation
            images only (None: all; 288 crops per image are slow on a CPU).
        fresh: first delete `work_dir` if an earlier demo made it (never a
            folder without the demo's marker file).
    """

    work_dir: str = "demo_output"
    config: str = CONFIG
    image_size: int = 40
    max_per_class: Optional[int] = None
    train_steps: Optional[int] = None
    overrides: str = ""
    num_workers: int = 2
    multicrop_protocol: str = "polynet_multicrop"
    multicrop_max_images: Optional[int] = None
    fresh: bool = False


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: its commands (run together when several)."""

    title: str
    commands: Tuple[Tuple[str, ...], ...]


def paths(options: DemoOptions) -> dict:
    """Where each step reads and writes."""
    work = options.work_dir
    return {
        "digits": f"{work}/digits", "records": f"{work}/records", "run": f"{work}/run",
        "serving": f"{work}/serving", "report": f"{work}/report",
    }


def commands(options: DemoOptions, ports: Sequence[int] = README_PORTS) -> List[Step]:
    """The demo's steps as argv lists (`python` stands for the interpreter).

    Args:
        options: sizes and places.
        ports: one localhost port per worker.

    Returns:
        The steps in order.
    """
    p = paths(options)
    digits = ["python", "-m", "polynet_tf.demo.digits", "--output_dir", p["digits"],
              "--image_size", str(options.image_size)]
    if options.max_per_class:
        digits += ["--max_per_class", str(options.max_per_class)]
    records = ["python", "-m", "polynet_tf.data.build_tfrecords",
               "--image_dir", f"{p['digits']}/train", "--output_dir", p["records"],
               "--num_shards", "4", "--validation_fraction", "0.2",
               "--num_validation_shards", "2", "--noprogress"]
    override = [f"train_data.file_pattern={p['records']}/train-*",
                f"eval_data.file_pattern={p['records']}/validation-*"]
    if options.train_steps:
        override.append(f"trainer.train_steps={options.train_steps}")
    if options.overrides:
        override.append(options.overrides)
    hosts = ",".join(f"localhost:{port}" for port in ports[:options.num_workers])
    train = tuple(
        tuple(["python", "-m", "polynet_tf.train", "--config", options.config,
               "--model_dir", p["run"], "--params_override", ",".join(override)]
              + (["--worker_hosts", hosts, "--task_index", str(index)]
                 if options.num_workers > 1 else []))
        for index in range(options.num_workers))
    evaluate = ["python", "-m", "polynet_tf.evaluate", "--checkpoint", p["run"],
                "--data_pattern", f"{p['records']}/validation-*", "--image_size", CROP_SIZE,
                "--noprogress"]
    multicrop_limit = (["--max_images", str(options.multicrop_max_images)]
                       if options.multicrop_max_images else [])
    return [
        Step("Write the digits as JPEG files in class folders", (tuple(digits),)),
        Step("Build TFRecord shards (train and validation)", (tuple(records),)),
        Step(f"Train on {options.num_workers} local worker(s)", train),
        Step("Evaluate: single centre crop (the whole image)", (tuple(evaluate + [
            "--protocol", "single", "--crop_fraction", "1.0",
            "--output", f"{p['run']}/evaluation_single.json"]),)),
        Step(f"Evaluate: multi-crop ({options.multicrop_protocol})", (tuple(evaluate + [
            "--protocol", options.multicrop_protocol, "--scales", MULTICROP_SCALES,
            "--crops_per_scale", MULTICROP_CROPS_PER_SCALE,
            *multicrop_limit,
            "--output", f"{p['run']}/evaluation_{options.multicrop_protocol}.json",
            "--save_crops_figure", f"{p['report']}/crops.png"]),)),
        Step("Export a SavedModel for TF Serving", (("python", "-m", "polynet_tf.export",
             "--output_base", p["serving"], "--model_name", "digits", "--checkpoint", p["run"],
             "--config", f"{p['run']}/params.yaml",
             "--class_names", f"{p['records']}/class_index.json"),)),
        Step("Export an int8 LiteRT model, calibrated on training images", ((
            "python", "-m", "polynet_tf.export", "--format", "litert", "--quantize", "int8",
            "--output_base", p["serving"], "--model_name", "digits", "--checkpoint", p["run"],
            "--config", f"{p['run']}/params.yaml",
            "--class_names", f"{p['records']}/class_index.json",
            "--calibration_data", f"{p['records']}/train-*",
            "--calibration_images", INT8_CALIBRATION_IMAGES,
            "--held_out_images", INT8_HELD_OUT_IMAGES),)),
        Step("Classify held-out images through serving_default and the int8 model", (
            ("python", "-m", "polynet_tf.demo.predict", "--saved_model", f"{p['serving']}/digits/1",
             "--image_dir", f"{p['digits']}/held_out",
             "--class_index", f"{p['records']}/class_index.json",
             "--page", f"{p['report']}/predictions.png",
             "--model_file", f"{p['serving']}/digits_int8.tflite"),)),
        Step("Plot the training curves", (("python", "-m", "polynet_tf.demo.curves",
             "--model_dir", p["run"], "--output", f"{p['report']}/training_curves.png"),)),
        Step("Plot accuracy against cost (paper Fig. 6)", (("python", "-m", "polynet_tf.plot_runs",
             p["run"], "--protocol", "single", "--labels", "digits_demo",
             "--output", f"{p['report']}/accuracy_vs_cost.png"),)),
    ]


def shell_lines(steps: Sequence[Step]) -> List[str]:
    """The steps as shell lines: parallel commands end with `&`, then `wait`."""
    lines = []
    for step in steps:
        for index, argv in enumerate(step.commands):
            last = index == len(step.commands) - 1
            lines.append(shlex.join(argv) + ("" if last else " &"))
        if len(step.commands) > 1:
            lines.append("wait")
    return lines


def free_ports(count: int) -> List[int]:
    """`count` localhost ports that were free a moment ago (bound to port 0)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class StepFailed(RuntimeError):
    """A step's command exited with an error."""


def _print_now(text):
    print(text, flush=True)  # before the child process writes to the same stream


def run_demo(options: DemoOptions, log=_print_now) -> dict:
    """Runs every step, printing each command first.

    Args:
        options: sizes and places.
        log: where progress lines go.

    Returns:
        {"seconds": per step title, "total_seconds": the whole run}.

    Raises:
        StepFailed: naming the command and its exit status.
        FileExistsError: `work_dir` exists and is not an earlier demo's.
    """
    from polynet_tf import fileio  # noqa: PLC0415  (TensorFlow: not for --print_commands)

    if options.fresh and fileio.isfile(fileio.join(options.work_dir, MARKER_FILE)):
        log(f"$ rm -r {shlex.quote(options.work_dir)}")
        fileio.remove_tree(options.work_dir)
    _prepare_work_dir(options.work_dir)
    steps = commands(options, free_ports(options.num_workers))
    seconds = {}
    start = time.perf_counter()
    for number, step in enumerate(steps, 1):
        log(f"\n=== [{number}/{len(steps)}] {step.title}")
        for line in shell_lines([step]):
            log(f"$ {line}")
        began = time.perf_counter()
        _run_parallel(step.commands, options.work_dir)
        seconds[step.title] = time.perf_counter() - began
        log(f"--- {seconds[step.title]:.1f} s")
    total = time.perf_counter() - start
    log(f"\n=== Demo finished in {total:.1f} s: {len(seconds)} of {len(steps)} steps; "
        f"report in {paths(options)['report']}/")
    return {"seconds": seconds, "total_seconds": total}


def _prepare_work_dir(work_dir):
    from polynet_tf import fileio  # noqa: PLC0415

    if fileio.isdir(work_dir) and fileio.listdir(work_dir):
        if not fileio.exists(fileio.join(work_dir, MARKER_FILE)):
            raise FileExistsError(f"--work_dir {work_dir!r} exists and was not made by the demo: "
                                  "choose another folder.")
        raise FileExistsError(f"--work_dir {work_dir!r} holds an earlier demo run: pass --fresh "
                              f"to replace it, delete it (rm -r {shlex.quote(work_dir)}) or "
                              "choose another folder.")
    fileio.atomic_write_text(fileio.join(work_dir, MARKER_FILE), "made by polynet_tf.demo\n")


def _run_parallel(argvs, work_dir):
    """Runs the commands at once; the first streams, the others log to files.

    A process writes its log to a local file (`WORK_DIR/worker_<i>.log`, to
    follow as it grows); for a `work_dir` URI the logs are written in a local
    scratch folder and copied into `work_dir` when the step ends.
    """
    from polynet_tf import fileio  # noqa: PLC0415

    scratch = None if fileio.is_local(work_dir) else tempfile.mkdtemp(prefix="polynet_demo-")
    try:
        _run_logged(argvs, work_dir if scratch is None else scratch, work_dir)
    finally:
        if scratch is not None:
            for name in sorted(os.listdir(scratch)):
                fileio.atomic_write_bytes(fileio.join(work_dir, name),
                                          fileio.read_bytes(os.path.join(scratch, name)))
            shutil.rmtree(scratch, ignore_errors=True)


def _run_logged(argvs, log_dir, shown_dir):
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    environment.pop("TF_CONFIG", None)  # the workers' --worker_hosts must win
    processes, logs = [], []
    for index, argv in enumerate(argvs):
        real = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        if index == 0:
            processes.append(subprocess.Popen(real, env=environment))
            continue
        log_path = os.path.join(log_dir, f"worker_{index}.log")
        logs.append(posixpath.join(shown_dir, f"worker_{index}.log"))  # where it ends up
        with open(log_path, "w") as log_file:
            processes.append(subprocess.Popen(real, stdout=log_file, stderr=subprocess.STDOUT,
                                              env=environment))
    codes = [None] * len(processes)
    try:
        while any(code is None for code in codes):
            for index, process in enumerate(processes):
                if codes[index] is None:
                    codes[index] = process.poll()
                if codes[index] not in (None, 0):
                    raise StepFailed(f"`{shlex.join(argvs[index])}` exited with status "
                                     f"{codes[index]}" + (f" (log: {logs[index - 1]})"
                                                          if index else ""))
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
