"""VGG19 'VGG54' feature extractor (conv1_1 ... relu5_4) for the perceptual loss, with Caffe-style input."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg19

# The original Oxford/Caffe VGG19 expects RGB in 0-255 minus this mean, with no std division.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


class VGG54(nn.Module):
    """``torchvision`` VGG19 ``features[:36]``: the activations after relu5_4, frozen.

    Input: RGB in [-1, 1] (the generator's range); it is mapped to Caffe-style 0-255 minus the mean.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg19(weights=None).features[:36]
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> VGG54:  # always in eval mode: it is a fixed feature extractor
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x + 1.0) * 127.5 - self.mean)
