"""The SRGAN losses: pixel MSE (or its per-picture log, PSNR's loss), VGG54 perceptual, adversarial, and the Per-Pix
weight schedule."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vsr.errors import VsrError

VGG_RESCALE = 1.0 / 12.75  # Ledig et al.: brings VGG54 feature MSE to the scale of the pixel MSE
LOSSES = ("mse", "vgg", "gan", "perpix", "psnr")


@dataclass(frozen=True)
class Stage:
    """Up to and including ``until`` (1-based step), the content weights are (mse, vgg)."""

    until: int
    mse: float
    vgg: float


DEFAULT_PERPIX = (Stage(15_000, 10.0, 1.0), Stage(20_000, 10.0, 10.0), Stage(35_000, 1.0, 10.0))


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """``"15000:10:1,20000:10:10,35000:1:10"`` -> stages (until step : MSE weight : VGG weight)."""
    try:
        stages = tuple(Stage(int(u), float(a), float(b)) for u, a, b in (part.split(":") for part in text.split(",")))
    except ValueError as exc:
        raise VsrError(f"--perpix-schedule {text!r}: expected UNTIL:W_MSE:W_VGG,... e.g. 15000:10:1,20000:10:10") from exc
    if not stages or any(b.until <= a.until for a, b in zip(stages, stages[1:])):
        raise VsrError(f"--perpix-schedule {text!r}: stages must have increasing step limits")
    return stages


def content_weights(loss: str, step: int, *, content: str = "mse", schedule: tuple[Stage, ...] = DEFAULT_PERPIX) -> tuple[float, float]:
    """(MSE weight, VGG weight) at 1-based ``step`` for ``loss``; the last Per-Pix stage holds past its end."""
    if loss in ("mse", "psnr"):
        return 1.0, 0.0
    if loss == "vgg":
        return 0.0, 1.0
    if loss == "gan":
        return (1.0, 0.0) if content == "mse" else (0.0, 1.0)
    if loss == "perpix":
        for stage in schedule:
            if step <= stage.until:
                return stage.mse, stage.vgg
        return schedule[-1].mse, schedule[-1].vgg
    raise VsrError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")


def uses_gan(loss: str) -> bool:
    return loss in ("gan", "perpix")


def log_mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean over pictures (dim 0) of 10 log10 of each one's pixel MSE, i.e. minus the mean PSNR up to a constant:
    every picture counts by its relative error, where the plain MSE of a batch follows its hardest pictures (and
    a change that helps those while costing the easy ones lowers the MSE and the mean PSNR together)."""
    per = (sr.float() - hr.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(per.clamp_min(1e-10)).mean()


def vgg_loss(vgg: nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """MSE between VGG54 features of SR and HR (both in [-1, 1]), rescaled by 1/12.75."""
    with torch.no_grad():
        target = vgg(hr)
    return F.mse_loss(vgg(sr).float() * VGG_RESCALE, target.float() * VGG_RESCALE)


def generator_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(LR)), computed stably from logits."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(HR) - log(1 - D(G(LR)))."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake
