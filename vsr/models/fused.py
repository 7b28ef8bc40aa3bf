"""An inference-only rewrite of a trained SRResNet that computes the same function faster.

Three exact rewrites (equal up to floating-point rounding), measured on a 2-core AVX512-BF16 CPU
(see benchmarks/RESULTS.md):

1. Every eval-mode BatchNorm is folded into the convolution before it.
2. The last x2 stage's PReLU is applied before its PixelShuffle, with each channel's slope repeated
   for the four sub-pixel channels that shuffle into it (PReLU is per channel, the shuffle only
   moves values), so the 4x-resolution 64-channel map is never materialised.
3. The final 9x9 conv 64->3 at 4x resolution (3 output channels: a poor shape for every conv
   kernel) becomes a 5x5 conv 256->12 on the pre-shuffle 2x map ("space to depth": each of the 12
   outputs is one colour at one of the four sub-pixel phases), followed by a 12->3 PixelShuffle.
   Output channels are zero-padded to 16, a shape oneDNN and cuDNN run well, and sliced back.

A ``RecurrentSRResNet`` keeps its temporal convs and runs its SRResNet core through the same rewrite.
Training keeps using ``SRResNet``; only callers that run a frozen model (``Upscaler``) use this.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vsr.models.flowfuse import FlowFusedSRResNet
from vsr.models.recurrent import RecurrentSRResNet
from vsr.models.srresnet import ResidualBlock, SRResNet

_PAD_OUT_TO = 16


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing ``bn(conv(x))`` with BN's running statistics (eval mode)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    out.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    out.bias.copy_(bias * scale + shift)
    return out


@torch.no_grad()
def space_to_depth_conv(conv: nn.Conv2d, factor: int = 2, pad_out_to: int = _PAD_OUT_TO) -> nn.Conv2d:
    """The conv that, applied to ``pixel_unshuffle(x, factor)``, gives ``pixel_unshuffle(conv(x), factor)``.

    ``conv`` must be a stride-1, 'same'-padded square odd kernel. Output channels are zero-padded to a
    multiple of ``pad_out_to``; slice ``[:, :conv.out_channels * factor**2]`` before shuffling.
    """
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1) or conv.padding != (k // 2, k // 2) \
            or conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("space_to_depth_conv needs a stride-1, same-padded, odd square kernel")
    r, f = k // 2, factor
    reach = -(-r // f)  # taps on the coarse grid on each side: ceil(r / f)
    k2 = 2 * reach + 1
    c_in, c_out = conv.in_channels, conv.out_channels
    n_out = c_out * f * f
    n_pad = -(-n_out // pad_out_to) * pad_out_to
    w = conv.weight.detach().float().cpu()
    # pixel_unshuffle layout: channel c * f*f + p * f + q holds sub-pixel phase (p, q) of channel c.
    w2 = torch.zeros(c_out, f, f, c_in, f, f, k2, k2)
    for a in range(f):  # output phase (a, b) ...
        for b in range(f):
            for p in range(f):  # ... reads input phase (p, q) at coarse offset (ky, kx) - reach
                for q in range(f):
                    for ky in range(k2):
                        dy = f * (ky - reach) + p - a
                        for kx in range(k2):
                            dx = f * (kx - reach) + q - b
                            if abs(dy) <= r and abs(dx) <= r:
                                w2[:, a, b, :, p, q, ky, kx] = w[:, :, dy + r, dx + r]
    w2 = torch.cat([w2.reshape(n_out, c_in * f * f, k2, k2), torch.zeros(n_pad - n_out, c_in * f * f, k2, k2)])
    out = nn.Conv2d(c_in * f * f, n_pad, k2, padding=reach, bias=True)
    out.weight.copy_(w2.to(conv.weight.dtype))
    bias = torch.zeros(n_pad)
    if conv.bias is not None:
        bias[:n_out] = conv.bias.detach().float().cpu().repeat_interleave(f * f)
    out.bias.copy_(bias)
    return out


class _FusedBlock(nn.Module):
    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        conv1, bn1, act, conv2, bn2 = block.body
        self.conv1, self.act, self.conv2 = fold_batchnorm(conv1, bn1), copy.deepcopy(act), fold_batchnorm(conv2, bn2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FusedSRResNet(nn.Module):
    """Same input/output contract as ``SRResNet`` (RGB [0, 1] in, [-1, 1] out); inference only."""

    def __init__(self, model: SRResNet) -> None:
        super().__init__()
        self.scale = model.scale
        self.head = copy.deepcopy(model.head)
        self.blocks = nn.Sequential(*[_FusedBlock(b) for b in model.blocks])
        self.trunk_end = fold_batchnorm(*model.trunk_end)
        stages = list(model.upsample)
        self.upsample = copy.deepcopy(nn.Sequential(*stages[:-1]))
        last = stages[-1]
        factor = last.shuffle.upscale_factor
        self.last_conv = copy.deepcopy(last.conv)
        self.last_act = nn.PReLU(last.act.num_parameters * factor * factor if last.act.num_parameters > 1 else 1)
        with torch.no_grad():
            slope = last.act.weight.detach()
            self.last_act.weight.copy_(slope.repeat_interleave(factor * factor) if slope.numel() > 1 else slope)
        self.tail = space_to_depth_conv(model.tail, factor)
        self.factor = factor
        self.out_channels = model.tail.out_channels * factor * factor
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        return self.decode(self.trunk_end(self.blocks(head)) + head)

    def decode(self, trunk: torch.Tensor) -> torch.Tensor:
        """``SRResNet.decode``: trunk features -> RGB, through the rewritten last stage and tail."""
        t = self.last_act(self.last_conv(self.upsample(trunk)))
        return F.pixel_shuffle(self.tail(t)[:, : self.out_channels], self.factor)


def fuse_temporal(model: RecurrentSRResNet | FlowFusedSRResNet) -> RecurrentSRResNet | FlowFusedSRResNet:
    """A copy of a temporal generator (recurrent, window or flow-fused) whose SRResNet core is a ``FusedSRResNet``
    (same forward and state)."""
    fused = copy.deepcopy(model)
    fused.core = FusedSRResNet(model.core)
    return fused.to(next(model.parameters()).device).eval()


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """``FusedSRResNet`` for an ``SRResNet``, a recurrent generator with a fused core (copies; ``model`` is
    untouched); any other model as is."""
    if isinstance(model, SRResNet):
        return FusedSRResNet(model).to(next(model.parameters()).device)
    if isinstance(model, (RecurrentSRResNet, FlowFusedSRResNet)):
        return fuse_temporal(model)
    return model
