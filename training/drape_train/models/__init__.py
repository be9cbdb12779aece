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


# One constructor per network name (a registry, not a chain of name tests); each takes (widths, height, width, **kw).
MODELS = {
    "garment_seg": GarmentSegNet,
    "human_parsing": HumanParsingNet,
    "gmm": GMM,
    "tom": lambda widths, height, width, **kw: TOM(widths),   # fully convolutional: no resolution
    "recolor": RecolorNet,
    "onmodel_seg": OnModelSegNet,
}


def build(name: str, widths: list[int], height: int, width: int, **kw) -> nn.Module:
    try:
        make = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {ALL_NETWORKS}") from None
    return make(widths, height, width, **kw)
