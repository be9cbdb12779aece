"""The network families, one module each: model builder, dataset view, objective and metrics, classical baseline
and evaluation rows (``base.Family`` says what a family holds). Adding a network is adding its family module
here, its model in ``drape_train.models`` and its ``configs/<name>.yaml``.
"""
from __future__ import annotations

from .base import EvalContext, Family
from .gmm import GMMFamily
from .parsing import HumanParsing
from .recolor import Recolor
from .segmentation import GarmentSeg, OnModelSeg
from .tom import TOMFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (GarmentSeg(), HumanParsing(), GMMFamily(), TOMFamily(), Recolor(),
                                                    OnModelSeg())}

__all__ = ["FAMILIES", "EvalContext", "Family", "family"]


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {tuple(FAMILIES)}") from None
