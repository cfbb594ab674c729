"""Reference PyTorch PolyNets (pretrainedmodels, pytorchcv) with random weights.

Each reference is built once per test run (the xdist processes share it):
random conv / linear weights, random BatchNorm affine parameters AND moving
statistics, saved as a state-dict checkpoint; its logits and features on a
fixed batch of 331x331 inputs are kept, and the model itself is freed.

The two packages are installed with `--no-deps` (scripts/setup_env.sh): their
torchvision requirement would pull a multi-GB CUDA build. `import
pretrainedmodels` imports torchvision in its package `__init__`, so its model
file is loaded on its own (it needs only torch); pytorchcv's
`pytorchcv.models.polynet` imports cleanly.
"""

import dataclasses
import importlib.util
import math
import os

import filelock
import numpy as np
import pytest

BATCH = 2
SIZE = 331


@dataclasses.dataclass
class Reference:
    """A saved random checkpoint and what the PyTorch model computed on `inputs`."""

    layout: str
    checkpoint: str
    inputs: np.ndarray  # (BATCH, 331, 331, 3), NHWC for Keras
    logits: np.ndarray  # (BATCH, 1000)
    features: np.ndarray  # (BATCH, 9, 9, 2048), NHWC
    keys: list


def _pretrainedmodels_polynet(torch):
    spec = importlib.util.find_spec("pretrainedmodels")
    if spec is None:
        pytest.skip("pretrainedmodels is not installed (scripts/setup_env.sh installs it)")
    path = os.path.join(spec.submodule_search_locations[0], "models", "polynet.py")
    module_spec = importlib.util.spec_from_file_location("_reference_pm_polynet", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    net = module.PolyNet(num_classes=1000)
    return net, net.avg_pool


def _pytorchcv_polynet(torch):
    polynet = pytest.importorskip("pytorchcv.models.polynet")
    net = polynet.polynet()
    return net, net.features.final_pool


def randomize(net, torch, seed):
    """Random weights (uniform +-1/sqrt(fan_in)) and random BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.num_batches_tracked.fill_(1000)


def _build_reference(layout, folder, seed):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(os.cpu_count() or 1)
    make = _pretrainedmodels_polynet if layout == "pretrainedmodels" else _pytorchcv_polynet
    net, final_pool = make(torch)
    randomize(net, torch, seed)
    net.eval()
    checkpoint = os.path.join(folder, f"{layout}.pth")
    state = net.state_dict()
    torch.save(state, checkpoint)
    inputs = np.random.default_rng(seed).random((BATCH, SIZE, SIZE, 3), dtype=np.float32)
    # The features are what enters the final average pooling: kept from the
    # same forward pass as the logits (a second pass would cost as much again).
    seen = []
    hook = final_pool.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)))
        logits = net(x).numpy()
    hook.remove()
    (feature_map,) = seen
    return Reference(layout, checkpoint, inputs, logits,
                     feature_map.numpy().transpose(0, 2, 3, 1), list(state))


def _shared_reference(layout, seed, tmp_path_factory, worker_id):
    """`_build_reference` once per test run: the first xdist process builds, the other loads.

    Building a reference (the full-size PyTorch network, forward at 331x331)
    takes about a minute; the test files that need one may run in either
    process.
    """
    if worker_id == "master":  # not under xdist
        return _build_reference(layout, str(tmp_path_factory.mktemp(layout)), seed)
    folder = tmp_path_factory.getbasetemp().parent / f"reference_{layout}"
    arrays = folder / "outputs.npz"
    with filelock.FileLock(f"{folder}.lock"):
        if not arrays.exists():
            folder.mkdir(exist_ok=True)
            built = _build_reference(layout, str(folder), seed)
            partial = folder / "outputs.partial.npz"
            np.savez(partial, inputs=built.inputs, logits=built.logits,
                     features=built.features, keys=np.array(built.keys))
            os.replace(partial, arrays)
            return built
    with np.load(arrays) as saved:
        return Reference(layout, str(folder / f"{layout}.pth"), saved["inputs"],
                         saved["logits"], saved["features"], saved["keys"].tolist())


@pytest.fixture(scope="session")
def pretrainedmodels_reference(tmp_path_factory, worker_id):
    return _shared_reference("pretrainedmodels", 1, tmp_path_factory, worker_id)


@pytest.fixture(scope="session")
def pytorchcv_reference(tmp_path_factory, worker_id):
    return _shared_reference("pytorchcv", 2, tmp_path_factory, worker_id)
