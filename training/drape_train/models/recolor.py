"""Recolor U-Net: dual encoders, cross-attention bottleneck (query on-model, key/value still), mask-aware output.

The decoder only sees skips from the on-model encoder: geometry and texture come from the photo, colour from
the still through attention. Outside the garment the input passes through untouched.

The network starts from a classical answer and learns what it gets wrong: the on-model garment's per-channel
mean/std matched to the still garment's (Reinhard's transfer, in RGB, with the soft masks as weights). That base
is an input of the on-model encoder and the decoder predicts a residual on top of it, so early training already
sits at the classical baseline and the learned part is the non-linear rest (hue rotations, shading).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CrossAttention, Decoder, Encoder
from .representation import ParsingGroups, garment_prob


class RecolorNet(nn.Module):
    input_names = ("on_model", "still", "parsing_logits", "still_mask_logits")
    output_names = ("recolored", "garment_mask")

    def __init__(self, widths: list[int], height: int, width: int, heads: int = 4):
        super().__init__()
        self.groups = ParsingGroups()
        self.enc_on = Encoder(7, widths)      # photo, garment mask, moment-matched base
        self.enc_still = Encoder(4, widths)
        f = 2 ** (len(widths) - 1)
        self.attn = CrossAttention(widths[-1], heads, height // f, width // f)
        self.decoder = Decoder(widths, 3)

    def forward(self, on_model, still, parsing_logits, still_mask_logits):
        m = garment_prob(self.groups(parsing_logits))
        sm = torch.sigmoid(still_mask_logits)
        base = moment_match(on_model, m, still, sm)
        fo = self.enc_on(torch.cat([on_model * 2 - 1, m, base * 2 - 1], 1))
        fs = self.enc_still(torch.cat([(still * 2 - 1) * sm, sm], 1))
        bottleneck = self.attn(fo[-1], fs[-1])
        pred = torch.clamp(base + self.decoder(fo, bottleneck), 0.0, 1.0)   # a residual on the classical base
        return m * pred + (1 - m) * on_model, m


def masked_moments(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weighted mean and std [B,C,1,1] (ReduceMean only: exports to TensorRT-native ops)."""
    total = w.mean((2, 3), keepdim=True) + eps
    mu = (x * w).mean((2, 3), keepdim=True) / total
    var = ((x - mu) ** 2 * w).mean((2, 3), keepdim=True) / total
    return mu, torch.sqrt(var + eps)


def moment_match(src: torch.Tensor, src_w: torch.Tensor, ref: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
    """``src`` with its weighted per-channel moments replaced by ``ref``'s, clamped to [0, 1]."""
    mu_s, sd_s = masked_moments(src, src_w)
    mu_r, sd_r = masked_moments(ref, ref_w)
    return torch.clamp((src - mu_s) / sd_s * sd_r + mu_r, 0.0, 1.0)
