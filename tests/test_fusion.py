"""The learned fusion (fusion-srresnet): its warm start is the fixed flow blend exactly, a fresh stream's first
frame stays the SRResNet's whatever it learned, gradients reach it through the recursion so it learns what the
fixed blend cannot, and it trains with the core frozen through `vsr train` and exports to a temporal weights file."""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from clips import frame_image
from conftest import tiny_model
from torch import nn

from vsr.config import TrainConfig
from vsr.inference import Upscaler
from vsr.models import SRResNet
from vsr.models.flowfuse import from_srresnet
from vsr.models.recurrent import Unrolled
from vsr.trainer import export, train
from vsr.weights import load, save


def _panning(n: int, w: int = 40, h: int = 32, step: int = 2, seed: int = 0) -> torch.Tensor:
    """(T, 1, 3, h, w) in [0, 1]: a window moving ``step`` px a frame over one smooth random picture."""
    g = torch.Generator().manual_seed(seed)
    world = F.interpolate(torch.rand(1, 3, h // 4 + 2, (w + step * n) // 4 + 2, generator=g),
                          size=(h + 8, w + step * n + 8), mode="bicubic", align_corners=False)[0, :, 4:-4, 4:-4]
    world = (world.clamp(0, 1) * 255).round() / 255
    return torch.stack([world[:, :, i * step: i * step + w] for i in range(n)])[:, None]


class _Bicubic(nn.Module):
    """A stand-in core: bicubic x4 in [-1, 1] (so the fusion has something to add)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False) * 2 - 1


def test_the_warm_start_is_the_fixed_blend_and_a_first_frame_stays_the_srresnet():
    base = tiny_model(3)
    fixed = from_srresnet(base, alpha=0.5).eval()
    learned = from_srresnet(base, alpha=0.5, fusion=8, fusion_layers=3).eval()
    assert (fixed.arch, learned.arch) == ("flow-srresnet", "fusion-srresnet")
    clip = _panning(4, 24, 20)
    sa = sb = None
    with torch.no_grad():
        for x in clip:
            a, sa = fixed(x, sa)
            b, sb = learned(x, sb)
            assert torch.equal(a, b)
        nn.init.normal_(learned.fusion.out.weight, std=0.05)  # as if trained
        s = None
        for t, x in enumerate(clip):
            b, s = learned(x, s)
            if t == 0:
                assert torch.equal(b, base(x).clamp(-1, 1))
        assert (b - fixed(clip[-1], sa)[0]).abs().max() > 1e-3  # later frames do change


def test_the_fusion_learns_through_the_recursion_what_the_fixed_blend_cannot():
    """Noisy panning frames through a known core (bicubic), the target the clean frames' bicubic: a few Adam steps
    on the fusion alone lower the error of the frames after the first well below the fixed blend's."""
    torch.manual_seed(0)
    clean = _panning(5, seed=1)
    hr = _Bicubic()(clean.flatten(0, 1)).view(5, 1, 3, 128, 160).transpose(0, 1)
    noisy = (clean + 0.03 * torch.randn_like(clean)).clamp(0, 1).mul(255).round().div(255).transpose(0, 1)
    model = from_srresnet(tiny_model(0), alpha=0.5, fusion=16, fusion_layers=3)
    model.core = _Bicubic()
    model.freeze_core()
    unrolled = Unrolled(model)
    opt = torch.optim.Adam(model.fusion.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return (unrolled(noisy)[:, 1:] - hr[:, 1:]).pow(2).mean()

    with torch.no_grad():
        start = loss().item()
    for _ in range(40):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        end = loss().item()
    assert end < 0.7 * start
    assert model.fusion.body[0].weight.grad.abs().max() > 0  # gradients reached the first layer


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    hr = tmp_path / "hr"
    hr.mkdir(parents=True, exist_ok=True)
    import cv2

    for i in range(2):
        cv2.imwrite(str(hr / f"{i}.png"), frame_image(7 * i, 160, 120))
    base = dict(data=[str(hr)], out=str(tmp_path / "run"), arch="fusion-srresnet", seq_len=3, steps=3, batch_size=2,
                crop=64, lr=1e-3, lr_min=1e-3, precision="fp32", device="cpu", val_every=0, ckpt_every=3,
                log_every=1, core_lr=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_vsr_train_learns_only_the_fusion_with_a_frozen_core_and_exports(tmp_path: Path):
    torch.manual_seed(0)
    init = save(SRResNet().eval(), tmp_path / "mse.pt", meta={"name": "mse"})
    run = train(_cfg(tmp_path, init=str(init)), quiet=True)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    start = torch.load(init, weights_only=False)["state_dict"]
    assert all(torch.equal(ck["model"][f"core.{k}"], v) for k, v in start.items())  # frozen: untouched
    assert ck["model"]["fusion.out.weight"].abs().max() > 0  # the fusion started to learn
    loaded = load(str(export(run, tmp_path / "fusion.pt", name="fusion")))
    d = loaded.descriptor
    assert (d.arch, d.temporal, d.tiling) == ("fusion-srresnet", True, False)
    assert d.params["fusion"] == 64 and loaded.meta["train_config"]["core_lr"] == 0.0
    up = Upscaler(loaded.model, device=torch.device("cpu"), descriptor=d)
    clip = np.stack([frame_image(i, 20, 16) for i in range(3)])
    state = None
    for f in clip:
        out, state = up.upscale_stream(f[None], state)
        assert out.shape == (1, 64, 80, 3)
