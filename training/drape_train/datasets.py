"""Torch datasets over the VITON-HD layout: one view per network (its family's ``item``), all held in memory (the
sets are small).

Every item is a dict of float tensors in [0,1] (images NCHW without the batch dim) so one collate serves all.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from drape_train.data.layout import RECOLOR_MAGNITUDE, VitonDataset, magnitude_range
from drape_train.families import family
# numpy -> item tensors, importable from here as before
from drape_train.imaging import _img, _mask, warp_with_flow  # noqa: F401


class NetworkDataset(Dataset):
    """Items for one network, built from a VitonDataset split."""

    def __init__(self, root: str, split: str, network: str, seed: int = 0, pairs: str = "same",
                 magnitude: tuple[float, float] = RECOLOR_MAGNITUDE):
        """``magnitude`` (recolor): the range each item's degradation magnitude is drawn from, uniformly
        (`drape_train.data.degrade` says what a magnitude means in Delta E). ``pairs`` (gmm): "same" = each person with the still of the garment they wear (VITON's paired
        training); "cross" = a person with the still of *another* garment, scored against that garment worn by
        the same person (what try-on serves; needs exact pairs, i.e. the synthetic studio); "mixed" = both, or
        "same" with a warning where the split has no such pairs (VITON-HD), so the default config runs there."""
        if pairs not in ("same", "cross", "mixed"):
            raise ValueError(f"pairs must be 'same', 'cross' or 'mixed', got {pairs!r}")
        self.src = VitonDataset(root, split)
        self.network = network
        self.seed = seed
        self.magnitude = magnitude_range(magnitude)
        self.samples = {i: self.src.load(i) for i in self.src.ids}
        self.pairs = [(p, c, self.src.target_for(p, c)) for p, c in self.src.pairs]
        self.pairs = [(p, c, t) for p, c, t in self.pairs if t is not None]
        self.ids = list(self.src.ids)
        self.epoch = 0
        self.items = []                                   # gmm: (person, cloth, target) ids, in pairing order
        self.family = family(network)
        self.family.prepare(self, pairs, root, split)

    def __len__(self) -> int:
        return self.family.length(self)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.family.item(self, i)
