"""Segmentation family: garment segmentation of still product images (binary) and human parsing (LIP ids)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import UNet
from .representation import NUM_LABELS


def bottleneck_hw(height: int, width: int, widths: list[int], stem_stride: int) -> tuple[int, int]:
    f = stem_stride * 2 ** (len(widths) - 1)
    return height // f, width // f


class GarmentSegNet(nn.Module):
    """Still product image [B,3,H,W] in [0,1] -> garment mask logits [B,1,H,W]."""

    input_names = ("image",)
    output_names = ("mask_logits",)

    def __init__(self, widths: list[int], height: int, width: int, stem_stride: int = 1, attention: bool = False):
        super().__init__()
        hw = bottleneck_hw(height, width, widths, stem_stride) if attention else None
        self.net = UNet(3, 1, widths, stem_stride, hw)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2.0 - 1.0)


class HumanParsingNet(nn.Module):
    """Person / on-model image [B,3,H,W] in [0,1] -> LIP parsing logits [B,20,H,W]."""

    input_names = ("image",)
    output_names = ("parsing_logits",)

    def __init__(self, widths: list[int], height: int, width: int, stem_stride: int = 1, attention: bool = False):
        super().__init__()
        hw = bottleneck_hw(height, width, widths, stem_stride) if attention else None
        self.net = UNet(3, NUM_LABELS, widths, stem_stride, hw)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2.0 - 1.0)
