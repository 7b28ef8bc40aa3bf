"""Every ``.pt`` file vsr reads or writes (generator weights, training checkpoints and snapshots, VGG19), and
the model descriptors that say what a network is.

All reads use ``torch.load(..., weights_only=True)``: a file whose pickle would run code is refused, never
executed. All writes go through ``vsr.atomic.atomic_output``. A weights file is a plain dict
``{"format", "meta", "state_dict"}``; ``meta`` names the architecture and its keyword arguments (the
descriptor follows from them) and records how the file was made (``name``, ``steps``, ``train_config``).
torch and the architectures are imported where they are used, so naming the shipped models (the CLI's
defaults) costs nothing.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsr.atomic import atomic_output
from vsr.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "vsr-weights-v1"
WEIGHTS_DIR = Path(os.environ.get("VSR_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))
SRRESNET_PARAMS = {"num_blocks": 16, "channels": 64, "scale": 4}
RECURRENT_PARAMS = SRRESNET_PARAMS | {"hidden": 32, "temporal_kernel": 3, "window": 2, "feedback": True}
# the sliding window: frames t-2, t-1 and t, nothing fed back
WINDOW_PARAMS = SRRESNET_PARAMS | {"hidden": 0, "temporal_kernel": 3, "window": 3, "feedback": False}
# an SRResNet per frame blended with its warped previous output (vsr.models.flowfuse): no temporal weights
FLOW_PARAMS = SRRESNET_PARAMS | {"alpha": 0.5, "sigma": 8.0, "preset": "medium"}
# the same blend refined by a small learned network (FusionNet): trained with the core frozen
FUSION_PARAMS = FLOW_PARAMS | {"fusion": 64, "fusion_layers": 5}


@dataclass(frozen=True)
class ModelDescriptor:
    """What a generator is, as data: everything ``vsr.inference.Upscaler`` needs to run it correctly.

    ``input_range`` / ``output_range``: the values the network takes and gives for black..white;
    ``size_multiple``: input height and width are padded up to a multiple of it (and the output cropped);
    ``tiling``: whether the network may run on overlapping tiles (false for anything with global context);
    ``activation_elements``: peak activation elements per input pixel, for the memory budget;
    ``temporal``: the network takes frames in order and carries a state (``forward(lr, state) -> (sr, state)``,
    run by ``Upscaler.upscale_stream``) instead of mapping one image to one image.
    """

    arch: str
    scale: int
    params: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 3
    out_channels: int = 3
    input_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] = (-1.0, 1.0)
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    tiling: bool = True
    size_multiple: int = 1
    min_size: int = 0  # inputs smaller than this are padded up to it (and the output cropped)
    square: bool = False  # the network needs square inputs (padded, then cropped)
    activation_elements: int = 3 * 64 * 16
    num_parameters: int = 0
    source: str = "vsr"  # vsr (our own format) or spandrel (a community model file)
    purpose: str = "SR"  # SR, or Restoration for 1x models (denoisers, deblockers, ...)
    temporal: bool = False

    def build(self) -> nn.Module:
        """A randomly initialised instance of the architecture."""
        from vsr.models import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise WeightsError(f"unknown architecture {self.arch!r} (known: {', '.join(ARCHITECTURES)})")
        try:
            return ARCHITECTURES[self.arch](**self.params)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{self.arch}({self.params}): {exc}") from None


KNOWN_ARCHS = ("srresnet", "recurrent-srresnet", "window-srresnet", "flow-srresnet", "fusion-srresnet")
# flow-srresnet is made, not trained: from an SRResNet (scripts/make_flow_model.py)
TRAINABLE_ARCHS = ("srresnet", "recurrent-srresnet", "window-srresnet", "fusion-srresnet")
DEFAULT_PARAMS = {"srresnet": SRRESNET_PARAMS, "recurrent-srresnet": RECURRENT_PARAMS, "window-srresnet": WINDOW_PARAMS,
                  "flow-srresnet": FLOW_PARAMS, "fusion-srresnet": FUSION_PARAMS}


def describe(arch: str, params: dict[str, Any]) -> ModelDescriptor:
    """The descriptor of a known architecture with these keyword arguments."""
    if arch not in KNOWN_ARCHS:
        raise WeightsError(f"unknown architecture {arch!r} (known: {', '.join(KNOWN_ARCHS)})")
    params = DEFAULT_PARAMS[arch] | dict(params)
    channels, scale = int(params["channels"]), int(params["scale"])
    # SRResNet's peak: about three ``channels``-wide maps alive at the output resolution
    peak = 3 * channels * scale**2
    if arch == "srresnet":
        return ModelDescriptor(arch=arch, scale=scale, params=params, activation_elements=peak)
    if arch in ("flow-srresnet", "fusion-srresnet"):  # state, flow, trust at LR size, the warped output at HR size
        fusion = 3 * int(params.get("fusion", 0)) + 10 * scale**2 if arch == "fusion-srresnet" else 0
        return ModelDescriptor(arch=arch, scale=scale, params=params, activation_elements=peak + 2 * (3 + 3 * scale**2 + 1)
                               + 4 * 3 * scale**2 + fusion, tiling=False, temporal=True)
    # a temporal one adds its state and the temporal conv's input at LR size; its state spans whole frames
    state = 3 * (int(params["window"]) - 1) + (3 * scale**2 if params["feedback"] else 0) + int(params["hidden"])
    return ModelDescriptor(arch=arch, scale=scale, params=params, activation_elements=peak + 2 * state + channels,
                           tiling=False, temporal=True)


def describe_model(model: nn.Module) -> ModelDescriptor:
    """The descriptor of a model instance: exact for an ``SRResNet`` or ``RecurrentSRResNet``; for any other
    module (test stand-ins, benchmarks' baselines) the SRResNet contract with its ``scale`` attribute (default 4)."""
    from vsr.models import FlowFusedSRResNet, RecurrentSRResNet, SRResNet

    if isinstance(model, SRResNet):
        params = {"num_blocks": len(model.blocks), "channels": model.head[0].out_channels, "scale": model.scale}
        return describe("srresnet", params)
    if isinstance(model, (RecurrentSRResNet, FlowFusedSRResNet)):
        return describe(model.arch, model.arch_kwargs)
    return ModelDescriptor(arch=type(model).__name__, scale=int(getattr(model, "scale", 4)))


@dataclass(frozen=True)
class WeightsSpec:
    """A shipped model: its name, file, a one-line description and its measured x4 Y-PSNR in dB (how it was
    trained and every table behind the figures: weights/MODEL_CARD.md)."""

    name: str
    file: str
    description: str = ""
    psnr: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


# The shipped models; the first is the default for `vsr upscale`. PSNR: `vsr bench` (BI; bicubic scores
# Set5 28.40, Set14 25.99, Vid4 23.78 on the same path).
SHIPPED: dict[str, WeightsSpec] = {spec.name: spec for spec in [
    WeightsSpec("srresnet-mse", "srresnet-mse.pt", "SRResNet trained with MSE: the most faithful to the input",
                {"Set5": 31.10, "Set14": 27.84, "Vid4": 24.98}),
    WeightsSpec("srgan-perpix", "srgan-perpix.pt", "SRGAN generator (MSE + VGG + adversarial): more texture, lower PSNR",
                {"Set5": 29.54, "Set14": 26.84, "Vid4": 24.39}),
    WeightsSpec("srresnet-real", "srresnet-real.pt", "SRResNet fine-tuned on blur/noise/JPEG/H.264/H.265-degraded "
                "input: for compressed footage (Vid4 at H.264 CRF 23 / 28: 23.97 / 23.24)",
                {"Set5": 30.41, "Set14": 27.45, "Vid4": 24.77}),
    WeightsSpec("srresnet-flow", "srresnet-flow.pt", "srresnet-mse per frame, each output blended with the previous "
                "one warped by optical flow (a video model: same pictures as srresnet-mse on images)",
                {"Set5": 31.10, "Vid4": 25.07}),
]}
DEFAULT_WEIGHTS = "srresnet-mse"  # images, folders, `vsr bench`, `vsr serve`
DEFAULT_VIDEO_WEIGHTS = "srresnet-flow"  # `vsr upscale` of a video file


def shipped_spec(path: str | Path | None) -> WeightsSpec | None:
    """The shipped model stored at ``path``, or None (another file: its quality is not known here)."""
    if not path:
        return None
    target = Path(path).resolve()
    return next((spec for spec in SHIPPED.values() if spec.path.resolve() == target), None)


@dataclass
class LoadedWeights:
    """A ready model, its descriptor, and the metadata of the file it came from."""

    model: nn.Module
    descriptor: ModelDescriptor
    meta: dict[str, Any]
    path: Path

    @property
    def scale(self) -> int:
        return self.descriptor.scale


def resolve(name_or_path: str) -> Path:
    """A shipped name (``srresnet-mse``) or a path to a ``.pt`` file -> an existing file path."""
    if name_or_path in SHIPPED:
        path = SHIPPED[name_or_path].path
        if not path.is_file():
            raise WeightsError(f"shipped weights {name_or_path!r} are missing: expected {path}")
        return path
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise WeightsError(
        f"--weights {name_or_path!r}: neither a shipped model ({', '.join(SHIPPED)}) nor an existing file"
    )


def _read(path: Path, what: str) -> Any:
    """``torch.load`` with ``weights_only``: anything that is not plain tensors and containers is refused."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such {what}") from None
    except Exception as exc:  # torch raises many types for truncated zips and foreign or unsafe pickles
        first = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: not a readable {what} ({type(exc).__name__}: {first})") from None


def _write(obj: Any, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return path


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _canonical_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes that DDP (``module.``) and torch.compile (``_orig_mod.``) add."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _check_keys(path: Path, what: str, expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise WeightsError(f"{path}: weights do not match {what}: " + "; ".join(detail))


COMMUNITY_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
MAX_SCALE = 8


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors (the format holds no code, only a JSON header and raw tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: not a readable safetensors file ({first})") from None


def load(name_or_path: str = DEFAULT_WEIGHTS) -> LoadedWeights:
    """Load a weights file safely (``weights_only`` pickles or safetensors): our own format, checked tensor by
    tensor, or any single-image model file spandrel recognises (.pth, .pt, .ckpt, .safetensors)."""
    path = resolve(name_or_path)
    blob = _read_safetensors(path) if path.suffix.lower() == ".safetensors" else _read(path, "weights file")
    if isinstance(blob, dict) and blob.get("format") != FORMAT and path.suffix.lower() in COMMUNITY_SUFFIXES:
        return _load_community(path, blob)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(f"{path}: not a vsr weights file (expected a dict with format {FORMAT!r}); "
                           "export training runs with `vsr train export`, or give a community model as "
                           f"{', '.join(COMMUNITY_SUFFIXES)}")
    meta = dict(blob.get("meta") or {})
    descriptor = describe(meta.get("arch", "srresnet"), meta.get("arch_kwargs") or {})
    meta["arch"], meta["arch_kwargs"] = descriptor.arch, descriptor.params
    model = descriptor.build()
    state = _canonical_keys(blob["state_dict"])
    _check_keys(path, f"{descriptor.arch}({descriptor.params})", model.state_dict(), state)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval().requires_grad_(False)
    descriptor = dataclasses.replace(descriptor, num_parameters=sum(p.numel() for p in model.parameters()))
    return LoadedWeights(model=model, descriptor=descriptor, meta=meta, path=path)


def save(model: nn.Module, path: str | Path, *, meta: dict[str, Any], half: bool = False) -> Path:
    """Write an inference-only weights file (atomically); ``half`` stores fp16 tensors.

    The architecture and its arguments are taken from the model itself, so they always match the tensors.
    """
    descriptor = describe_model(unwrap(model))
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in unwrap(model).state_dict().items()}  # no wrapper prefixes in files
    meta = dict(meta) | {"arch": descriptor.arch, "arch_kwargs": descriptor.params}
    return _write({"format": FORMAT, "meta": meta, "state_dict": state}, Path(path))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a training checkpoint or snapshot (a dict of tensors, numbers and plain containers) atomically."""
    return _write(state, Path(path))


def load_checkpoint(path: str | Path, *, required: tuple[str, ...] = ("model", "step", "config")) -> dict[str, Any]:
    """Read a training checkpoint or snapshot; a corrupt file or one missing ``required`` keys is a WeightsError."""
    path = Path(path)
    state = _read(path, "checkpoint")
    if not isinstance(state, dict) or any(k not in state for k in required):
        have = ", ".join(sorted(map(str, state))) if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{path}: not a vsr checkpoint (expected {', '.join(required)}; found {have})")
    return state


def load_vgg54(path: str | Path) -> nn.Module:
    """The VGG54 feature extractor with the Oxford VGG19 conv weights from ``path`` (see shared/weights/SOURCES.md)."""
    from vsr.models import VGG54

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: VGG19 weights not found; pass --vgg-weights PATH "
                           "(the file is shared/weights/vgg19_features_conv54_fp16.pt)")
    state = _read(path, "VGG19 weights file")
    model = VGG54()
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict of VGG19 conv layers")
    expected = model.features.state_dict()
    bad = sorted(set(expected) ^ set(state)) or [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise WeightsError(f"{path}: does not match VGG19 features[:36] (first mismatch: {bad[0]})")
    model.features.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def _community_module(desc: Any) -> nn.Module:
    """The network of a spandrel descriptor as a plain module whose ``forward`` is the architecture's own call."""
    from torch import nn

    class SpandrelModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = desc.model
            self._call = desc._call_fn  # most architectures: the module itself; a few need their own call

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._call(self.net, x)

    return SpandrelModel()


def _load_community(path: Path, state: dict[str, Any]) -> LoadedWeights:
    """A community model file through spandrel: its architecture is detected from the tensors alone (our own
    ``weights_only`` read already refused anything that is not plain tensors), then described as data."""
    try:
        import spandrel
    except ImportError:  # a normal dependency; only a broken install gets here
        raise WeightsError(f"{path}: not a vsr weights file, and spandrel (for community models) is not "
                           "installed: pip install spandrel") from None
    if not state or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{path}: not a model's state dict (no named tensors)")
    try:
        desc = spandrel.MAIN_REGISTRY.load(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise WeightsError(f"{path}: not a vsr weights file, and no architecture spandrel knows matches its "
                           f"tensors ({len(state)} keys, e.g. {next(iter(state))}); video models and other "
                           "formats are not supported") from None
    except Exception as exc:  # an architecture matched but its tensors are inconsistent
        first = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: looks like a {type(exc).__name__} mismatch inside a known architecture "
                           f"({first})") from None
    name = desc.architecture.name
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise WeightsError(f"{path}: a {name} model for inpainting (image + mask); vsr runs image-to-image models")
    if desc.purpose == "FaceSR":
        raise WeightsError(f"{path}: {name} restores aligned face crops, not whole frames; use an SR model")
    if not 1 <= desc.scale <= MAX_SCALE:
        raise WeightsError(f"{path}: {name} upscales x{desc.scale}; vsr runs x1 to x{MAX_SCALE} models")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise WeightsError(f"{path}: {name} is a {desc.input_channels}->{desc.output_channels} channel model; "
                           "vsr runs RGB (3->3) models only (greyscale models are not supported)")
    req = desc.size_requirements
    precisions = ("fp32",) + (("bf16",) if desc.supports_bfloat16 else ()) + (("fp16",) if desc.supports_half else ())
    n_params = sum(p.numel() for p in desc.model.parameters())
    descriptor = ModelDescriptor(
        arch=desc.architecture.id, scale=int(desc.scale), params={}, in_channels=3, out_channels=3,
        input_range=(0.0, 1.0), output_range=(0.0, 1.0), precisions=precisions,
        tiling=desc.tiling != spandrel.ModelTiling.INTERNAL, size_multiple=int(req.multiple_of),
        min_size=int(req.minimum), square=bool(req.square),
        # not known for arbitrary architectures: a generous guess (4x SRResNet's per output pixel) for the memory budget
        activation_elements=4 * 3 * 64 * max(1, int(desc.scale)) ** 2,
        num_parameters=n_params, source="spandrel", purpose=str(desc.purpose))
    model = _community_module(desc).eval().requires_grad_(False)
    meta = {"name": path.stem, "arch": descriptor.arch, "architecture": name, "source": "spandrel",
            "scale": descriptor.scale, "purpose": descriptor.purpose, "tags": list(desc.tags),
            "parameters": n_params, "precisions": list(precisions),
            "tiling": desc.tiling.name.lower()}
    return LoadedWeights(model=model, descriptor=descriptor, meta=meta, path=path)
