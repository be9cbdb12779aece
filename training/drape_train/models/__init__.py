"""Network definitions, one module per family. `build(name, cfg)` is what training and export use."""
from __future__ import annotations

import torch.nn as nn

from .gmm import GMM
from .onmodel_seg import OnModelSegNet
from .recolor import RecolorNet
from .segmentation import GarmentSegNet, HumanParsingNet
from .tom import TOM

NETWORKS = ("garment_seg", "human_parsing", "gmm", "tom", "recolor")   # trained, exported and served by `make`
# Trained and exported only when asked for by name (configs/<name>*.yaml, `drape_export onnx --networks`); not served.
RESEARCH_NETWORKS = ("onmodel_seg",)
ALL_NETWORKS = NETWORKS + RESEARCH_NETWORKS


def build(name: str, widths: list[int], height: int, width: int, **kw) -> nn.Module:
    if name == "garment_seg":
        return GarmentSegNet(widths, height, width, **kw)
    if name == "human_parsing":
        return HumanParsingNet(widths, height, width, **kw)
    if name == "gmm":
        return GMM(widths, height, width, **kw)
    if name == "tom":
        return TOM(widths)
    if name == "recolor":
        return RecolorNet(widths, height, width, **kw)
    if name == "onmodel_seg":
        return OnModelSegNet(widths, height, width, **kw)
    raise ValueError(f"unknown network {name!r}; expected one of {ALL_NETWORKS}")
