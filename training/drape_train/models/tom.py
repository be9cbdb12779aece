"""Try-On Module: a U-Net renders the person and a composition mask; the warped garment is blended in.

output = m * warped_garment + (1 - m) * rendered. The person enters garment-agnostic: the old garment and the
arms are greyed out, so the network must render them from the warped garment and the body representation.
`edit_mask` (old garment + arms + new garment) tells post-processing where the original photo may change.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import UNet
from .representation import AGNOSTIC_CHANNELS, ParsingGroups, agnostic, garment_prob


class TOM(nn.Module):
    input_names = ("person", "parsing_logits", "warped_garment", "warped_mask")
    output_names = ("tryon", "edit_mask")

    def __init__(self, widths: list[int]):
        super().__init__()
        self.groups = ParsingGroups()
        self.net = UNet(3 + AGNOSTIC_CHANNELS + 3 + 1, 4, widths)

    def render(self, person, parsing_logits, warped_garment, warped_mask):
        g = self.groups(parsing_logits)
        region = torch.clamp(garment_prob(g) + g[:, 2:3], 0.0, 1.0)      # old garment + arms
        person_agnostic = person * (1 - region) + 0.5 * region
        x = torch.cat([person_agnostic, agnostic(g), warped_garment, warped_mask], 1)
        out = self.net(x * 2 - 1)
        rendered = torch.sigmoid(out[:, :3])
        m = torch.sigmoid(out[:, 3:4]) * warped_mask
        tryon = m * warped_garment + (1 - m) * rendered
        edit = torch.clamp(region + warped_mask, 0.0, 1.0)
        return tryon, edit, rendered, m

    def forward(self, person, parsing_logits, warped_garment, warped_mask):
        tryon, edit, _, _ = self.render(person, parsing_logits, warped_garment, warped_mask)
        return tryon, edit
