"""Named PolyNet architectures (a registry, as timm keeps one).

Every preset is data: the stage spec (grammar in `polynet_tf.models.spec`),
its residual-scale schedule, default input size and where it comes from.
Sources: the paper (Zhang et al., CVPR 2017) sections 3.2-3.4 and 5, and
docs/design.md section 1 for the released network.
"""

import dataclasses

from polynet_tf.data.input_contract import InputContract, resolve_input_contract
from polynet_tf.models.pretrained_config import CheckpointSource, PretrainedConfig
from polynet_tf.models.spec import parse_architecture

# The released network's beta_k = 1 - 0.3 k / 39, rounded to 6 decimals as in
# the published weights (docs/design.md section 1).
RELEASED_RESIDUAL_SCALE = {"start": 1.0, "end": 0.7, "decimals": 6}
# The paper's own runs (section 4, "Residual scaling"): beta = 0.3.
PAPER_RESIDUAL_SCALE = 0.3
# The paper's input side (section 4), for presets that set none and stage specs.
DEFAULT_SIZE = 299


@dataclasses.dataclass(frozen=True)
class ArchitecturePreset:
    """A named architecture and its metadata.

    Attributes:
        name: registry name, e.g. "very_deep".
        spec: stage spec text.
        residual_scale: default beta: a float, or a linear schedule
            {"start", "end"[, "decimals"]} over all modules.
        default_size: default input height/width.
        description: one line for listings.
        source: where the architecture is defined.
        pretrained: published weights by name (the `weights=` argument):
            a mapping {"imagenet": PretrainedConfig(...)}.
    """

    name: str
    spec: str
    residual_scale: object = PAPER_RESIDUAL_SCALE
    default_size: int = DEFAULT_SIZE
    description: str = ""
    source: str = ""
    pretrained: dict = dataclasses.field(default_factory=dict, hash=False)

    @property
    def architecture(self):
        return parse_architecture(self.spec)


_PRESETS = {}

_ABLATION_MODULES = ("2way", "3way", "poly2", "poly3", "mpoly2", "mpoly3")


def _register(preset):
    _PRESETS[preset.name] = preset


def _ir(a, b, c, stage_b=None):
    return f"A: ir*{a} | B: {stage_b or f'ir*{b}'} | C: ir*{c}"


_register(ArchitecturePreset(
    name="very_deep",
    spec="A: 2way*10 | B: (poly3[convs], 2way)*10 | C: (poly3[convs], 2way)*5",
    residual_scale=RELEASED_RESIDUAL_SCALE,
    default_size=331,
    description="Very Deep PolyNet, the released network (ImageNet top-1 81.0 / top-5 95.6)",
    source="paper section 3.4; pretrainedmodels `polynet`; docs/design.md section 1",
    pretrained={"imagenet": PretrainedConfig(
        name="imagenet",
        num_classes=1000,
        # The whole image squashed to 378x378 (= floor(331 / 0.875), aspect ratio
        # ignored), centre 331: the protocol of the published 81.002 / 95.624
        # (pretrainedmodels' imagenet_eval.py --do-not-preserve-aspect-ratio,
        # Cadene/pretrained-models.pytorch pull request #67).
        input_contract=InputContract(protocol="squash", image_size=331, resize_size=378),
        description="CUHK's released Very Deep PolyNet (Caffe), ported to PyTorch by "
                    "pretrainedmodels and pytorchcv: ImageNet val top-1 81.00 / top-5 95.62 "
                    "with the whole image squashed to 378x378, centre 331x331.",
        # Sources, checked in this package's history (not fetched at run time):
        # pytorchcv 0.0.74 `model_metainfos.csv` (row `polynet,95366600,0452,
        # 6a1b295d...,v0.0.96`) with `model_store.get_model_file`, which checks
        # the full SHA-1 of the unzipped `.pth`; pretrainedmodels 0.7.4
        # `pretrained_settings["polynet"]`, whose 8 hex digits follow the
        # torch.hub convention (start of the SHA-256), served over plain http
        # only (so the https source comes first).
        sources=(
            CheckpointSource(
                layout="pytorchcv",
                url="https://github.com/osmr/imgclsmob/releases/download/v0.0.96/"
                    "polynet-0452-6a1b295d.pth.zip",
                filename="polynet-0452-6a1b295d.pth",
                hash_algorithm="sha1",
                file_hash="6a1b295dad3f261b48e845f1b283e4eef3ab5a0b",
                reference="pytorchcv 0.0.74 model_metainfos.csv and model_store.py",
            ),
            CheckpointSource(
                layout="pretrainedmodels",
                url="http://data.lip6.fr/cadene/pretrainedmodels/polynet-f71d82a5.pth",
                filename="polynet-f71d82a5.pth",
                hash_algorithm="sha256",
                file_hash="f71d82a5",
                reference="pretrainedmodels 0.7.4 pretrainedmodels/models/polynet.py",
            ),
        ),
        converted_filename="polynet_very_deep_imagenet.weights.h5",
    )},
))
_register(ArchitecturePreset(
    name="ir_5_10_5", spec=_ir(5, 10, 5),
    description="Inception-ResNet-v2 baseline, IR 5-10-5",
    source="paper section 3.2, Fig. 5",
))
_register(ArchitecturePreset(
    name="ir_3_6_3", spec=_ir(3, 6, 3),
    description="IR 3-6-3, the ablation baseline",
    source="paper section 3.2",
))
for _stage in "abc":
    for _module in _ABLATION_MODULES:
        _counts = {"a": 3, "b": 6, "c": 3}
        _stages = {
            s: f"{_module}*{n}" if s == _stage else f"ir*{n}" for s, n in _counts.items()
        }
        _register(ArchitecturePreset(
            name=f"ir_3_6_3_{_stage}_{_module}",
            spec=f"A: {_stages['a']} | B: {_stages['b']} | C: {_stages['c']}",
            description=f"IR 3-6-3 with stage {_stage.upper()} units replaced by {_module}",
            source="paper section 3.2, Fig. 6 (18 ablation variants)",
        ))
_register(ArchitecturePreset(
    name="ir_6_12_6", spec=_ir(6, 12, 6),
    description="IR 6-12-6, the mixing-study baseline",
    source="paper section 3.3",
))
for _module in ("3way", "mpoly3", "poly3"):
    _register(ArchitecturePreset(
        name=f"ir_6_12_6_{_module}", spec=_ir(6, 12, 6, stage_b=f"{_module}*12"),
        description=f"IR 6-12-6 with stage B as {_module} x 12 (uniform config)",
        source="paper section 3.3, Fig. 8",
    ))
_register(ArchitecturePreset(
    name="ir_6_12_6_mixed", spec=_ir(6, 12, 6, stage_b="(3way, mpoly3, poly3)*4"),
    description="IR 6-12-6 with stage B as (3-way -> mpoly-3 -> poly-3) x 4",
    source="paper section 3.3, Fig. 7-8",
))
_register(ArchitecturePreset(
    name="ir_20_56_20", spec=_ir(20, 56, 20),
    description="Very Deep Inception-ResNet, IR 20-56-20",
    source="paper section 5, Table 1",
))


def list_architectures():
    """Names of every registered architecture preset, sorted."""
    return sorted(_PRESETS)


def get_architecture(name):
    """The `ArchitecturePreset` registered under `name`.

    Args:
        name: a preset name from `list_architectures()`.

    Raises:
        ValueError: unknown name, with the known names.
    """
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown architecture {name!r}. Known presets: "
            f"{', '.join(list_architectures())}; or pass a spec such as "
            "'A: ir*5 | B: ir*10 | C: ir*5'."
        ) from None


def presets_with_weights(name):
    """Names of the presets that have published weights `name`, sorted."""
    return [p for p in sorted(_PRESETS) if name in _PRESETS[p].pretrained]


def get_pretrained_config(architecture, name="imagenet"):
    """The `PretrainedConfig` of a preset's published weights.

    Args:
        architecture: a preset name, a stage spec, or None for the one preset
            that has weights `name` (an error when several have).
        name: the weights name.

    Returns:
        (preset name, `PretrainedConfig`).

    Raises:
        ValueError: no such published weights, naming those that exist.
    """
    if architecture is None:
        having = presets_with_weights(name)
        if len(having) != 1:
            raise ValueError(f"Weights {name!r} exist for the presets {having}; name the "
                             "architecture.")
        architecture = having[0]
    preset, _ = resolve_architecture(architecture)
    if preset is None or name not in preset.pretrained:
        known = sorted(f"{p}/{n}" for p in _PRESETS for n in _PRESETS[p].pretrained)
        raise ValueError(
            f"No published {name!r} weights for architecture "
            f"{preset.name if preset else 'a custom spec'!r}; published: {known}.")
    return preset.name, preset.pretrained[name]


def default_size(architecture):
    """The default input side of a preset name or a stage spec (299 for a spec)."""
    preset, _ = resolve_architecture(architecture)
    return preset.default_size if preset else DEFAULT_SIZE


def input_contract(architecture, image_size=None, protocol=None, weights="imagenet"):
    """The `InputContract` of an architecture: its published weights' (options win).

    Args:
        architecture: a preset name or a stage spec.
        image_size: the input size instead of the contract's.
        protocol: a single-crop protocol name instead of the contract's.
        weights: the published weights whose contract is the default.

    Returns:
        The published weights' contract with the options given over it
        (`resolve_input_contract`); without published weights, "single" at
        the architecture's default size.
    """
    preset, _ = resolve_architecture(architecture)
    published = preset.pretrained.get(weights) if preset else None
    return resolve_input_contract(
        pretrained=published.input_contract if published else None,
        default=InputContract(image_size=default_size(architecture)),
        image_size=image_size, protocol=protocol)


def resolve_architecture(architecture):
    """A preset name or a spec text -> (ArchitecturePreset or None, ArchitectureSpec).

    Raises:
        ValueError: unknown name or a spec that does not parse.
    """
    if isinstance(architecture, str) and ":" not in architecture:
        preset = get_architecture(architecture)
        return preset, preset.architecture
    return None, parse_architecture(architecture)
