"""Recolor U-Net: dual encoders, cross-attention bottleneck (query on-model, key/value still), mask-aware output.

The decoder only sees skips from the on-model encoder: geometry and texture come from the photo, colour from
the still through attention. Outside the garment the input passes through untouched.
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
        self.enc_on = Encoder(4, widths)
        self.enc_still = Encoder(4, widths)
        f = 2 ** (len(widths) - 1)
        self.attn = CrossAttention(widths[-1], heads, height // f, width // f)
        self.decoder = Decoder(widths, 3)

    def forward(self, on_model, still, parsing_logits, still_mask_logits):
        m = garment_prob(self.groups(parsing_logits))
        sm = torch.sigmoid(still_mask_logits)
        fo = self.enc_on(torch.cat([on_model * 2 - 1, m], 1))
        fs = self.enc_still(torch.cat([(still * 2 - 1) * sm, sm], 1))
        bottleneck = self.attn(fo[-1], fs[-1])
        pred = torch.clamp(on_model + self.decoder(fo, bottleneck), 0.0, 1.0)   # predict a residual
        return m * pred + (1 - m) * on_model, m
