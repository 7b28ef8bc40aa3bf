"""SRGAN discriminator: conv/BN/LeakyReLU blocks, then dense 1024 -> LeakyReLU -> dense 1 (logits)."""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)


class Discriminator(nn.Module):
    """Classifies ``crop`` x ``crop`` RGB images in [-1, 1] as real (logit > 0) or generated.

    Eight 3x3 conv blocks with channels 64..512 and strides alternating 1, 2 (the first without BN),
    LeakyReLU(0.2); then a dense layer of 1024, LeakyReLU and a dense layer of 1 (logits, used with
    ``BCEWithLogitsLoss`` rather than a sigmoid).
    """

    def __init__(self, *, crop: int = 96, in_channels: int = 3) -> None:
        super().__init__()
        if crop % 16:
            raise ValueError(f"the discriminator needs a crop divisible by 16, got {crop}")
        layers: list[nn.Module] = []
        prev = in_channels
        for i, ch in enumerate(CHANNELS):
            stride = 1 if i % 2 == 0 else 2
            layers.append(nn.Conv2d(prev, ch, 3, stride=stride, padding=1, bias=i == 0))
            if i:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = ch
        self.features = nn.Sequential(*layers)
        side = crop // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(prev * side * side, 1024), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)
