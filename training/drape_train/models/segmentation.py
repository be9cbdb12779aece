"""Segmentation family: garment segmentation of still product images (binary) and human parsing (LIP ids)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import UNet
from .representation import NUM_LABELS


class GarmentSegNet(nn.Module):
    """Still product image [B,3,H,W] in [0,1] -> garment mask logits [B,1,H,W]."""

    input_names = ("image",)
    output_names = ("mask_logits",)

    def __init__(self, widths: list[int], stem_stride: int = 1):
        super().__init__()
        self.net = UNet(3, 1, widths, stem_stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2.0 - 1.0)


class HumanParsingNet(nn.Module):
    """Person / on-model image [B,3,H,W] in [0,1] -> LIP parsing logits [B,20,H,W]."""

    input_names = ("image",)
    output_names = ("parsing_logits",)

    def __init__(self, widths: list[int], stem_stride: int = 1):
        super().__init__()
        self.net = UNet(3, NUM_LABELS, widths, stem_stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2.0 - 1.0)
