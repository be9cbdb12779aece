"""On-model garment segmentation: binary mask of the worn garment on a person photo, optionally guided by the still.

Two variants of one attention U-Net (gated skips + bottleneck self-attention, as the segmentation family):

* single (``dual=False``): on-model photo [B,3,H,W] -> mask logits [B,1,H,W].
* dual (``dual=True``): the same U-Net, whose bottleneck (and, with ``cross_skip``, the next finer skip level)
  cross-attends to the features of the still product image from a small still encoder: query = on-model,
  key/value = still. The still says *which* garment and what it looks like (colour, print, cut), which the
  photo alone leaves to priors when the garment and the rest of the outfit look alike.

Both export to the same op set as recolor (MatMul/Softmax attention, Conv, Resize), nothing TensorRT lacks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import CrossAttention, Decoder, Encoder


def level_hw(height: int, width: int, n_down: int) -> tuple[int, int]:
    """Feature size after `n_down` stride-2 3x3 convs (padding 1): ceil-halving, exact for any input size."""
    for _ in range(n_down):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


def _check_attention_width(channels: int, heads: int, where: str) -> None:
    if channels % 4 or channels % heads:
        raise ValueError(f"onmodel_seg: {where} width {channels} must be divisible by 4 and by heads={heads}")


class OnModelSegNet(nn.Module):
    """On-model photo (+ the still in the dual variant), RGB in [0,1] -> worn-garment mask logits [B,1,H,W]."""

    output_names = ("mask_logits",)

    def __init__(self, widths: list[int], height: int, width: int, stem_stride: int = 2, heads: int = 4,
                 dual: bool = True, cross_skip: bool = False, still_widths: list[int] | None = None):
        super().__init__()
        if len(widths) < 3:
            raise ValueError(f"onmodel_seg: need at least 3 widths, got {widths}")
        if cross_skip and not dual:
            raise ValueError("onmodel_seg: cross_skip needs dual=True (there is no still to attend to)")
        self.dual, self.cross_skip, self.stem_stride = dual, cross_skip, stem_stride
        self.input_names = ("on_model", "still") if dual else ("on_model",)
        n_down = len(widths) - 1 + (stem_stride != 1)
        hw = level_hw(height, width, n_down)
        _check_attention_width(widths[-1], heads, "bottleneck")
        self.encoder = Encoder(3, widths, stem_stride)
        self.self_attn = CrossAttention(widths[-1], heads, *hw)
        self.decoder = Decoder(widths, 1, gates=True)
        if dual:
            sw = list(still_widths) if still_widths else [max(4, w // 2) for w in widths]
            if len(sw) != len(widths):
                raise ValueError(f"onmodel_seg: still_widths {sw} must have as many levels as widths {widths}")
            # The still encoder is half as wide: it only has to say what the garment looks like, not where.
            self.still_encoder = Encoder(3, sw, stem_stride)
            self.still_proj = nn.Conv2d(sw[-1], widths[-1], 1)
            self.cross_attn = CrossAttention(widths[-1], heads, *hw)
            if cross_skip:
                _check_attention_width(widths[-2], heads, "skip")
                self.still_proj_skip = nn.Conv2d(sw[-2], widths[-2], 1)
                self.cross_attn_skip = CrossAttention(widths[-2], heads, *level_hw(height, width, n_down - 1))

    def forward(self, on_model: torch.Tensor, still: torch.Tensor | None = None) -> torch.Tensor:
        if self.dual and still is None:
            raise ValueError("onmodel_seg (dual): input 'still' [B,3,H,W] is required")
        feats = self.encoder(on_model * 2.0 - 1.0)
        x = self.self_attn(feats[-1], feats[-1])
        if self.dual:
            fs = self.still_encoder(still * 2.0 - 1.0)
            x = self.cross_attn(x, self.still_proj(fs[-1]))
            if self.cross_skip:
                feats = [*feats[:-2], self.cross_attn_skip(feats[-2], self.still_proj_skip(fs[-2])), feats[-1]]
        y = self.decoder(feats, x)
        if self.stem_stride != 1:
            y = F.interpolate(y, size=on_model.shape[-2:], mode="bilinear", align_corners=False)
        return y
