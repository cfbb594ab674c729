"""How long `PolyNet(weights="imagenet")` takes, against a keras.applications model (not a test).

Measured side by side in one run, each case in its own fresh worker process
(so that every case starts with the same empty process; importing TensorFlow
is not timed):

  convert   `PolyNet(weights="imagenet")` the first time: the published
            checkpoint file is already in the Keras cache, so it is read
            (without torch), converted, saved as `.weights.h5` and loaded; no
            download. The stand-in for the published file is a randomly
            initialised full-size reference network (pretrainedmodels'
            PolyNet, default PyTorch initialisation) saved with `torch.save`
            under the published name `polynet-f71d82a5.pth`; its hash replaces
            the published one in the worker.
  cached    `PolyNet(weights="imagenet")` once converted: build + strict load.
            Then, in the same (now warm) process, split into build, strict load
            (`load_weights_file`) and plain `model.load_weights` of the same
            file (what strictness costs).
  read      `read_checkpoint` alone: time and tracemalloc peak (NumPy arrays
            and Python objects) against the file size.
  baseline  `keras.applications.InceptionResNetV2(weights=None)` (55.9 M
            parameters, the closest keras.applications relative), saved to a
            `.weights.h5` in this run, then built and `load_weights`; then
            both again in the same process.

Peak memory is the worker's peak RSS (`resource.getrusage`), which includes
TensorFlow and the model itself. Ratios are against the baseline measured in
the same run; "per parameter" divides by each model's parameter count.

Usage: python benchmarks/weights_loading.py [--repeats 3] [--keep DIR]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

PUBLISHED_NAME = "polynet-f71d82a5.pth"

_WORKER = r"""
import dataclasses, json, resource, sys, time, tracemalloc
case, home, digest = sys.argv[1:4]
import keras
import tensorflow as tf
from polynet_tf.models.architectures import get_architecture, get_pretrained_config
from polynet_tf.weights import pretrained

preset, real = get_pretrained_config(None, "imagenet")
get_architecture(preset).pretrained["imagenet"] = dataclasses.replace(real, sources=tuple(
    dataclasses.replace(s, file_hash=digest) if s.layout == "pretrainedmodels" else s
    for s in real.sources))
def offline(*args, **kwargs):
    raise RuntimeError("no download in this benchmark")
keras.utils.get_file = offline
from polynet_tf.models.polynet import PolyNet
from polynet_tf.weights import load_weights_file, read_checkpoint

out = {}
if case == "convert":  # the first call: no converted file yet
    converted = home + "/models/" + real.converted_filename
    if tf.io.gfile.exists(converted):
        tf.io.gfile.remove(converted)
start = time.perf_counter()
if case in ("convert", "cached"):
    model = PolyNet(weights="imagenet")
    out["total_s"] = time.perf_counter() - start
    out["params"] = model.count_params()
    if case == "cached":  # the parts, timed again in this (now warm) process
        path = pretrained.pretrained_weights_file(
            get_architecture(preset).pretrained["imagenet"], preset)
        del model
        start = time.perf_counter()
        model = PolyNet(weights=None)
        out["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        load_weights_file(model, path)
        out["strict_load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model.load_weights(path)
        out["keras_load_s"] = time.perf_counter() - start
elif case == "read":
    tracemalloc.start()
    state = read_checkpoint(home + "/models/%s")
    out["total_s"] = time.perf_counter() - start
    out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    out["arrays_mb"] = sum(a.nbytes for a in state.values()) / 2**20
elif case == "baseline":
    model = keras.applications.InceptionResNetV2(weights=None)
    model.load_weights(home + "/baseline.weights.h5")
    out["total_s"] = time.perf_counter() - start
    out["params"] = model.count_params()
    del model
    start = time.perf_counter()
    model = keras.applications.InceptionResNetV2(weights=None)
    out["build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model.load_weights(home + "/baseline.weights.h5")
    out["keras_load_s"] = time.perf_counter() - start
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
""" % PUBLISHED_NAME


def _prepare(home):
    """The stand-in published checkpoint in the cache, and the baseline's weights file."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import importlib.util  # pylint: disable=import-outside-toplevel

    import torch  # pylint: disable=import-outside-toplevel

    models = os.path.join(home, "models")
    os.makedirs(models, exist_ok=True)
    spec = importlib.util.find_spec("pretrainedmodels")
    path = os.path.join(spec.submodule_search_locations[0], "models", "polynet.py")
    module_spec = importlib.util.spec_from_file_location("_reference_polynet", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # without the package __init__ (torchvision)
    torch.manual_seed(0)
    checkpoint = os.path.join(models, PUBLISHED_NAME)
    torch.save(module.PolyNet(num_classes=1000).state_dict(), checkpoint)
    with open(checkpoint, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:8]
    subprocess.run([sys.executable, "-c",
                    "import keras; keras.applications.InceptionResNetV2(weights=None)"
                    f".save_weights({os.path.join(home, 'baseline.weights.h5')!r})"],
                   check=True, env=_env(home))
    return checkpoint, digest


def _env(home):
    return {**os.environ, "KERAS_HOME": home, "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def _run(case, home, digest):
    result = subprocess.run([sys.executable, "-c", _WORKER, case, home, digest],
                            env=_env(home), capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        raise RuntimeError(f"{case} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _median(runs, key):
    return statistics.median(run[key] for run in runs)


def main(argv=None):
    """Runs the benchmark and prints the table; returns the results as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of cached and baseline")
    parser.add_argument("--keep", help="folder to keep the files in (default: a temporary one)")
    args = parser.parse_args(argv)
    home = args.keep or tempfile.mkdtemp(prefix="polynet-weights-bench-")
    try:
        checkpoint, digest = _prepare(home)
        size_mb = os.path.getsize(checkpoint) / 2**20
        read = _run("read", home, digest)
        # Interleaved, so that a change of load on the machine hits every case alike.
        convert, cached, baseline = [], [], []
        for _ in range(args.repeats):
            convert.append(_run("convert", home, digest))
            cached.append(_run("cached", home, digest))
            baseline.append(_run("baseline", home, digest))
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    base_total = _median(baseline, "total_s")
    base_load = _median(baseline, "keras_load_s")
    params, base_params = cached[0]["params"], baseline[0]["params"]
    per = base_params / params  # scales our time to the baseline's parameter count
    rows = [
        ("PolyNet(weights='imagenet'), first call: build, read .pth, convert, save",
         _median(convert, "total_s"), _median(convert, "peak_rss_mb"), base_total),
        ("PolyNet(weights='imagenet'), converted cache: build + strict load",
         _median(cached, "total_s"), _median(cached, "peak_rss_mb"), base_total),
        ("  again in the same process: build PolyNet(weights=None)", _median(cached, "build_s"),
         None, _median(baseline, "build_s")),
        ("  again in the same process: strict load (load_weights_file)",
         _median(cached, "strict_load_s"), None, base_load),
        ("  again in the same process: plain model.load_weights",
         _median(cached, "keras_load_s"), None, base_load),
        ("read_checkpoint alone (no torch), fresh process", read["total_s"], None, None),
        ("baseline InceptionResNetV2: build + load_weights", base_total,
         _median(baseline, "peak_rss_mb"), base_total),
        ("  again in the same process: build", _median(baseline, "build_s"), None,
         _median(baseline, "build_s")),
        ("  again in the same process: load_weights", base_load, None, base_load),
    ]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; checkpoint {size_mb:.0f} MiB; PolyNet {params:,} "
          f"parameters, InceptionResNetV2 {base_params:,}; medians of {args.repeats} runs")
    print(f"{'case':76s} {'seconds':>8s} {'peak RSS MiB':>13s} {'x baseline':>11s} "
          f"{'x per param':>12s}")
    for name, seconds, rss, reference in rows:
        ratio = f"{seconds / reference:11.2f}" if reference else " " * 11
        scaled = f"{seconds * per / reference:12.2f}" if reference else " " * 12
        memory = f"{rss:13.0f}" if rss else " " * 13
        print(f"{name:76s} {seconds:8.2f} {memory} {ratio} {scaled}")
    print(f"read_checkpoint: tracemalloc peak {read['tracemalloc_peak_mb']:.0f} MiB for "
          f"{read['arrays_mb']:.0f} MiB of arrays from a {size_mb:.0f} MiB file "
          f"({read['tracemalloc_peak_mb'] / read['arrays_mb']:.2f}x the arrays)")
    return {"read": read, "convert": convert, "cached": cached, "baseline": baseline}


if __name__ == "__main__":
    main()
