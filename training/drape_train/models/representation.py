"""Person representation built from a human-parsing map, shared by GMM, TOM and recolor.

Every consumer takes *parsing logits* (LIP label ids, 20 channels) so the same graph works on the ground-truth
parse during training (one-hot logits) and on the parsing network's output when served. Label groups are a
fixed 1x1 convolution, so the exported graph is a Softmax and a Conv — nothing TensorRT lacks.

Channels of `agnostic()` (garment-agnostic, as in CP-VTON: nothing in it reveals the garment being replaced):
  0 body shape: P(not background), blurred at 1/8 resolution so the garment outline cannot leak
  1 head: hat, hair, sunglasses, face
  2 arms: left + right arm skin
  3 lower body: pants, skirt, legs, shoes
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_LABELS = 20
GARMENT = (5, 6, 7)            # upper-clothes, dress, coat
HEAD = (1, 2, 4, 13)           # hat, hair, sunglasses, face
ARMS = (14, 15)
LOWER = (9, 12, 16, 17, 18, 19)
AGNOSTIC_CHANNELS = 4


def _group_weight(groups: list[tuple[int, ...]]) -> torch.Tensor:
    w = torch.zeros(len(groups), NUM_LABELS, 1, 1)
    for g, labels in enumerate(groups):
        w[g, list(labels)] = 1.0
    return w


class ParsingGroups(nn.Module):
    """Softmax over parsing logits, then sum label groups: [B,20,H,W] -> [B,5,H,W] = fg, head, arms, lower, garment."""

    def __init__(self):
        super().__init__()
        fg = tuple(range(1, NUM_LABELS))
        self.register_buffer("weight", _group_weight([fg, HEAD, ARMS, LOWER, GARMENT]), persistent=False)

    def forward(self, parsing_logits: torch.Tensor) -> torch.Tensor:
        return F.conv2d(torch.softmax(parsing_logits, dim=1), self.weight)


def agnostic(groups: torch.Tensor) -> torch.Tensor:
    """Garment-agnostic person representation [B,4,H,W] from ParsingGroups output."""
    h, w = groups.shape[-2:]
    shape = F.interpolate(F.avg_pool2d(groups[:, 0:1], 8), size=(h, w), mode="bilinear", align_corners=False)
    return torch.cat([shape, groups[:, 1:4]], dim=1)


def garment_prob(groups: torch.Tensor) -> torch.Tensor:
    return groups[:, 4:5]


def labels_to_logits(parse: torch.Tensor, scale: float = 12.0) -> torch.Tensor:
    """Ground-truth label map [B,H,W] (int) -> logits [B,20,H,W] whose softmax is (nearly) one-hot."""
    return F.one_hot(parse.long(), NUM_LABELS).permute(0, 3, 1, 2).float() * scale


def mask_to_logits(mask: torch.Tensor, scale: float = 12.0) -> torch.Tensor:
    """Binary mask in {0,1} [B,1,H,W] -> logits whose sigmoid is (nearly) the mask."""
    return (mask.float() * 2.0 - 1.0) * scale
