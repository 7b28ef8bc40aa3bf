"""A causal video generator with no temporal weights: an SRResNet per frame, then each output blended with the
previous output warped onto it by classical optical flow (OpenCV's DIS on the LR luma; no learned flow network).

One frame in, one frame out, ``forward(lr, state) -> (sr, new_state)``, with the state contract of
``vsr.models.recurrent`` (three tensors at the LR size, so the engine's streams, segments, scene cuts and
``reset_where`` work unchanged): the previous LR frame, the previous *fused* output pixel-unshuffled to LR size,
and a one-channel map that is 1 once a frame has been seen (0: a fresh stream, nothing to blend). Per HR pixel::

    out(t) = (1 - alpha * c) * SR(t) + alpha * c * warp(out(t-1)),   c = exp(-(r / sigma)^2)

where ``r`` is the LR luma residual (0-255 levels) of the previous frame warped by the same flow against this
frame, upscaled bilinearly: where the flow explains the picture the previous output is trusted, where it does
not (occlusions, cuts the histogram test missed, new content) the frame's own SR stands. The recursion makes
``out`` an exponentially weighted, motion-compensated average of past SR frames, so noise and aliasing that
differ from frame to frame partly cancel, and flicker drops. Memory is bounded (one previous frame).

With ``fusion`` channels (architecture ``fusion-srresnet``) a small learned network refines that blend: at LR
size it reads SR(t) and warp(out(t-1)) (both pixel-unshuffled), LR(t), LR(t-1) warped by the flow and the trust
map, and adds a correction to the blend weight and a residual to the picture, both at HR. Its last conv starts
at zero, so a model made by :func:`from_srresnet` computes the fixed blend exactly until it is trained, and a
fresh stream's first frame is the SRResNet's picture either way (nothing to fuse yet).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsr.models.recurrent import FreezableCore, State, check_state
from vsr.models.srresnet import SRResNet

DIS_PRESETS = ("ultrafast", "fast", "medium")
MIN_FLOW_SIDE = 16  # the smallest side given to DIS (see dis_flow)


class FusionNet(nn.Module):
    """The learned part of ``fusion-srresnet``: (N, 6 * s^2 + 7, H, W) at LR size -> the weight correction
    (N, 1, sH, sW) and the residual (N, 3, sH, sW) at HR size. Plain 3x3 convs with leaky ReLUs; the last at zero."""

    def __init__(self, scale: int, channels: int, layers: int) -> None:
        super().__init__()
        if channels < 1 or layers < 2:
            raise ValueError(f"fusion needs channels >= 1 and fusion_layers >= 2, got {channels} and {layers}")
        self.scale = scale
        width = [6 * scale * scale + 7] + [channels] * (layers - 1)
        body: list[nn.Module] = []
        for cin, cout in zip(width[:-1], width[1:]):
            body += [nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*body)
        self.out = nn.Conv2d(channels, 4 * scale * scale, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = F.pixel_shuffle(self.out(self.body(x)).float(), self.scale)
        return d[:, :1], d[:, 1:]


def _luma_u8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB in [0, 1] -> (N, H, W) uint8 BT.601 luma, as OpenCV's RGB2GRAY computes it."""
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return (y.float() * 255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def dis_flow(cur: np.ndarray, prev: np.ndarray, preset: str = "medium") -> np.ndarray:
    """(H, W, 2) float32 flow from ``cur`` to ``prev`` (uint8 luma): ``prev`` sampled at x + flow(x) looks like
    ``cur`` at x. OpenCV DIS with a fixed preset: deterministic for the same frames."""
    import cv2

    dis = cv2.DISOpticalFlow_create({"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                                     "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                                     "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset])
    h, w = cur.shape
    # DIS refuses pictures under 12 px on both sides and crashes the process (OpenCV 5.1) on some 12-15 px
    # high, wide ones: smaller sides are edge-padded to MIN_FLOW_SIDE and the flow cropped back.
    pad = ((0, max(0, MIN_FLOW_SIDE - h)), (0, max(0, MIN_FLOW_SIDE - w)))
    cur, prev = (np.pad(a, pad, mode="edge") if pad != ((0, 0), (0, 0)) else a for a in (cur, prev))
    return dis.calc(np.ascontiguousarray(cur), np.ascontiguousarray(prev), None)[:h, :w]


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``img`` (N, C, H, W) sampled bilinearly at x + ``flow`` (N, 2, H, W) pixels (x then y), edges replicated."""
    h, w = img.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=torch.float32),
                            torch.arange(w, device=img.device, dtype=torch.float32), indexing="ij")
    gx = (2 * (xs + flow[:, 0]) + 1) / w - 1  # pixel centres, as align_corners=False reads them
    gy = (2 * (ys + flow[:, 1]) + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class FlowFusedSRResNet(FreezableCore):
    """x``scale`` streaming generator: input RGB in [0, 1] and a state, output RGB in [-1, 1] and the next state.

    ``core`` is an SRResNet (its tensors under ``core.``, the only learned ones); ``alpha`` (0-1) is how much of
    the warped previous output a fully trusted pixel takes, ``sigma`` the LR residual (levels) at which trust
    falls to 1/e, ``preset`` the DIS preset. The flow runs on the CPU (OpenCV) whatever the model's device.
    ``fusion``: channels of the learned refinement (0: none, the fixed blend), ``fusion_layers`` its convs.
    """

    def __init__(self, *, num_blocks: int = 16, channels: int = 64, scale: int = 4, alpha: float = 0.5,
                 sigma: float = 8.0, preset: str = "medium", fusion: int = 0, fusion_layers: int = 4) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or sigma <= 0 or preset not in DIS_PRESETS:
            raise ValueError(f"alpha must be in [0, 1], sigma > 0 and preset one of {', '.join(DIS_PRESETS)}; "
                             f"got {alpha}, {sigma}, {preset!r}")
        self.core = SRResNet(num_blocks=num_blocks, channels=channels, scale=scale)
        self.scale, self.alpha, self.sigma, self.preset = scale, float(alpha), float(sigma), preset
        self.state_channels = (3, 3 * scale * scale, 1)
        self.fusion = FusionNet(scale, fusion, fusion_layers) if fusion else None
        self.fusion_layers = fusion_layers

    @property
    def arch(self) -> str:
        """flow-srresnet (the fixed blend) or fusion-srresnet (with the learned refinement)."""
        return "flow-srresnet" if self.fusion is None else "fusion-srresnet"

    @property
    def arch_kwargs(self) -> dict[str, int | float | str]:
        """The constructor's keyword arguments (what a weights file records)."""
        kwargs: dict[str, int | float | str] = {
            "num_blocks": len(self.core.blocks), "channels": self.core.head[0].out_channels, "scale": self.scale,
            "alpha": self.alpha, "sigma": self.sigma, "preset": self.preset}
        if self.fusion is not None:
            kwargs |= {"fusion": self.fusion.out.in_channels, "fusion_layers": self.fusion_layers}
        return kwargs

    def initial_state(self, lr: torch.Tensor) -> State:
        """A fresh start at ``lr``: no previous output, nothing to blend."""
        n, _, h, w = lr.shape
        return lr.clone(), lr.new_zeros(n, self.state_channels[1], h, w), lr.new_zeros(n, 1, h, w)

    def check_state(self, state: State, lr: torch.Tensor) -> None:
        """A ValueError unless ``state`` is this model's state for frames shaped like ``lr``."""
        check_state(state, lr, self.state_channels, "(prev_lr, prev_out, seen)")

    def forward(self, lr: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``lr`` (N, 3, H, W) in [0, 1], N independent streams -> ((N, 3, sH, sW) in [-1, 1], the next state)."""
        if state is None:
            state = self.initial_state(lr)
        self.check_state(state, lr)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.core_frozen):  # frozen: no graph to keep
            sr = self.core(lr).float()
        prev_lr, prev_out, seen = state
        cur_y, prev_y = _luma_u8(lr), _luma_u8(prev_lr)
        flow = torch.from_numpy(np.stack([dis_flow(c, p, self.preset) for c, p in zip(cur_y, prev_y)]))
        flow = flow.permute(0, 3, 1, 2).to(lr.device)
        resid = warp(torch.from_numpy(prev_y).to(lr.device)[:, None].float(), flow) \
            - torch.from_numpy(cur_y).to(lr.device)[:, None].float()
        trust_lr = torch.exp(-(resid / self.sigma) ** 2) * seen.float()
        s = self.scale
        trust = F.interpolate(trust_lr, scale_factor=s, mode="bilinear", align_corners=False)
        flow_hr = F.interpolate(flow, scale_factor=s, mode="bilinear", align_corners=False) * s
        prev_hr = warp(F.pixel_shuffle(prev_out.float(), s), flow_hr)
        weight = self.alpha * trust
        if self.fusion is None:
            out = ((1 - weight) * sr + weight * prev_hr).clamp(-1.0, 1.0)
        else:
            prev_lr_hat = warp(prev_lr, flow)
            dw, res = self.fusion(torch.cat([F.pixel_unshuffle(sr, s), F.pixel_unshuffle(prev_hr, s), lr.float(),
                                             prev_lr_hat, trust_lr], dim=1))
            seen_hr = F.interpolate(seen.float(), scale_factor=s, mode="nearest")
            weight = (weight + dw * seen_hr).clamp(0.0, 1.0)
            out = ((1 - weight) * sr + weight * prev_hr + res * seen_hr).clamp(-1.0, 1.0)
        return out.to(sr.dtype), (lr, F.pixel_unshuffle(out, s).to(prev_out.dtype), torch.ones_like(seen))


def from_srresnet(model: SRResNet, **settings: float | str | int) -> FlowFusedSRResNet:
    """A flow-fused generator around a copy of ``model``'s tensors; ``settings``: alpha, sigma, preset, fusion,
    fusion_layers (with ``fusion``, the learned part starts at zero: the fixed blend exactly)."""
    if not isinstance(model, SRResNet):
        raise TypeError(f"from_srresnet needs an SRResNet, got {type(model).__name__}")
    fused = FlowFusedSRResNet(num_blocks=len(model.blocks), channels=model.head[0].out_channels, scale=model.scale,
                              **settings)
    fused.core.load_state_dict(model.state_dict())
    return fused.to(next(model.parameters()).device).train(model.training)
