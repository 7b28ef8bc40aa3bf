"""Named generator weights described as data, and the only place that reads or writes weight files.

A weights file is ``torch.save`` of a plain dict ``{"format", "meta", "state_dict"}`` that loads with
``weights_only=True``. ``meta`` says what the network is (arch, scale, value ranges) and how it was
made (recipe, steps, measured PSNR) so a file is self-describing wherever it is copied.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsr.errors import WeightsError
from vsr.models import ARCHITECTURES

FORMAT = "vsr-weights-v1"
WEIGHTS_DIR = Path(os.environ.get("VSR_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))


@dataclass(frozen=True)
class WeightsSpec:
    """A shipped model: its name, file, architecture and what is known about its quality."""

    name: str
    file: str
    arch: str = "srresnet"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"num_blocks": 16, "channels": 64, "scale": 4})
    input_range: str = "[0, 1] RGB"
    output_range: str = "[-1, 1] RGB"
    recipe: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


# The shipped models; the first is the default for `vsr upscale`. Metrics are the measured Y-PSNR (dB)
# recorded in weights/MODEL_CARD.md.
SHIPPED: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in [
        WeightsSpec(
            name="srresnet-mse",
            file="srresnet-mse.pt",
            recipe="SRResNet, MSE loss, Adam, BSDS500+Sun-Hays80 with bicubic x4 LR: 8k steps of 16x96x96 crops on a CPU, "
                   "then 10.4k steps of 64x128x128 on an H200 (see MODEL_CARD.md)",
        ),
        WeightsSpec(
            name="srgan-perpix",
            file="srgan-perpix.pt",
            recipe="SRGAN generator fine-tuned from srresnet-mse with the Per-Pix loss (MSE + VGG54 + 1e-3 adversarial), "
                   "the recipe's schedule compressed; step 1425 on an H200, fp16 (see MODEL_CARD.md)",
        ),
    ]
}
DEFAULT_WEIGHTS = "srresnet-mse"


@dataclass
class LoadedWeights:
    """A ready model plus the metadata it was loaded with."""

    model: nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def scale(self) -> int:
        return int(self.meta["arch_kwargs"].get("scale", 4))


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


def build_model(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate an architecture by name (keyword-only arguments from the metadata)."""
    if arch not in ARCHITECTURES:
        raise WeightsError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](**arch_kwargs)


def _canonical_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes that DDP (``module.``) and torch.compile (``_orig_mod.``) add."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load(name_or_path: str = DEFAULT_WEIGHTS) -> LoadedWeights:
    """Load a weights file safely (``weights_only``), checking its format and every tensor shape."""
    path = resolve(name_or_path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated zips / foreign pickles
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise WeightsError(f"{path}: not a vsr weights file (expected a dict with format {FORMAT!r}); "
                           "export training runs with `vsr train export`")
    meta = dict(blob.get("meta") or {})
    arch = meta.get("arch", "srresnet")
    kwargs = dict(meta.get("arch_kwargs") or {"num_blocks": 16, "channels": 64, "scale": 4})
    meta["arch"], meta["arch_kwargs"] = arch, kwargs
    model = build_model(arch, kwargs)
    state = _canonical_keys(blob["state_dict"])
    expected = model.state_dict()
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
        raise WeightsError(f"{path}: weights do not match {arch}({kwargs}): " + "; ".join(detail))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval().requires_grad_(False)
    return LoadedWeights(model=model, meta=meta, path=path)


def save(model: nn.Module, path: str | Path, *, meta: dict[str, Any], half: bool = False) -> Path:
    """Write an inference-only weights file (atomically); ``half`` stores fp16 tensors."""
    path = Path(path)
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in module.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.save({"format": FORMAT, "meta": meta, "state_dict": state}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_vgg54(path: str | Path) -> nn.Module:
    """The VGG54 feature extractor with the Oxford VGG19 conv weights from ``path`` (see shared/weights/SOURCES.md)."""
    from vsr.models import VGG54

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: VGG19 weights not found; pass --vgg-weights PATH "
                           "(the file is shared/weights/vgg19_features_conv54_fp16.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise WeightsError(f"{path}: not a readable VGG19 weights file ({type(exc).__name__})") from exc
    model = VGG54()
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict of VGG19 conv layers")
    expected = model.features.state_dict()
    bad = sorted(set(expected) ^ set(state)) or [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise WeightsError(f"{path}: does not match VGG19 features[:36] (first mismatch: {bad[0]})")
    model.features.load_state_dict({k: v.float() for k, v in state.items()})
    return model
