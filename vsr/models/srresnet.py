"""SRResNet generator (Ledig et al. 2017) exactly as in the SRGAN recipe: no I/O, no training logic."""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv3x3 -> BN -> PReLU -> conv3x3 -> BN, plus the identity skip."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """conv3x3 (C -> 4C) -> PixelShuffle(2) -> PReLU: one x2 stage."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """x4 generator. Input: RGB in [0, 1]. Output: RGB in [-1, 1] (linear; callers clamp).

    9x9 conv 3->64 + PReLU; 16 residual blocks; conv3x3 -> BN plus the long skip;
    two x2 PixelShuffle stages; final 9x9 conv 64->3. About 1.55 M parameters.
    """

    def __init__(self, *, num_blocks: int = 16, channels: int = 64, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {scale}")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(num_blocks)])
        self.trunk_end = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        stages = {2: 1, 4: 2, 8: 3}[scale]
        self.upsample = nn.Sequential(*[UpsampleBlock(channels) for _ in range(stages)])
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        return self.decode(self.trunk_end(self.blocks(head)) + head)

    def decode(self, trunk: torch.Tensor) -> torch.Tensor:
        """The x``scale`` stages and the final conv: trunk features (after the long skip) -> RGB."""
        return self.tail(self.upsample(trunk))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
