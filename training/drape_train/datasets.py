"""Torch datasets over the VITON-HD layout: one view per network, all held in memory (the sets are small).

Every item is a dict of float tensors in [0,1] (images NCHW without the batch dim) so one collate serves all.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from drape_train.data.degrade import MODES, degrade
from drape_train.data.layout import RECOLOR_MAGNITUDE, VitonDataset, magnitude_range


def _img(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0


def _mask(a: np.ndarray) -> torch.Tensor:
    """bool masks, or uint8 masks with 255 on the object -> float {0,1} [1,H,W]."""
    a = np.asarray(a)
    return torch.from_numpy((a if a.dtype == bool else a > 127).astype(np.float32))[None]


def warp_with_flow(src: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `src` (HxW[xC]) at the normalised grid `flow` [H,W,2] (grid_sample, align_corners=False)."""
    h, w = src.shape[:2]
    fx = ((flow[..., 0] + 1) * w - 1) / 2
    fy = ((flow[..., 1] + 1) * h - 1) / 2
    return cv2.remap(src, fx.astype(np.float32), fy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


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
        if network == "gmm":
            cross = [(p, c, t) for p, c, t in self.pairs if p != c]
            if pairs == "mixed" and not cross:
                warnings.warn(f"{root}/{split}: no person/garment pairs with a ground-truth try-on image (VITON-HD "
                              "has none): gmm pairs='mixed' trains on each person's own garment only ('same')")
                pairs = "same"
            if pairs == "cross" and not cross:
                raise ValueError(f"{root}/{split}: pairs={pairs!r} needs person/garment pairs with a ground-truth "
                                 "try-on image (the synthetic studio has them; VITON-HD does not)")
            own = [(i, i, i) for i in self.ids]
            self.items = {"same": own, "cross": cross, "mixed": own + cross}[pairs]

    def __len__(self) -> int:
        if self.network == "gmm":
            return len(self.items)
        return len(self.pairs) if self.network == "tom" else len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return getattr(self, f"_{self.network}")(i)

    def _garment_seg(self, i):
        s = self.samples[self.ids[i]]
        return {"image": _img(s["cloth"]), "mask": _mask(s["cloth_mask"])}

    def _human_parsing(self, i):
        s = self.samples[self.ids[i]]
        return {"image": _img(s["image"]), "parse": torch.from_numpy(s["parse"].astype(np.int64))}

    def _onmodel_seg(self, i):
        # The person photo and the still of the garment that same photo shows (one sample id: the same garment);
        # the target is the worn garment's visible region (parse labels of the garment).
        s = self.samples[self.ids[i]]
        return {"on_model": _img(s["image"]), "still": _img(s["cloth"]), "mask": _mask(s["garment_mask"])}

    def _gmm(self, i):
        p, c, t = (self.samples[k] for k in self.items[i])   # person, still, the person wearing that still
        gm = _mask(t["garment_mask"])
        out = {"parse": torch.from_numpy(p["parse"].astype(np.int64)), "garment": _img(c["cloth"]),
               "garment_mask": _mask(c["cloth_mask"]), "target": _img(t["image"]) * gm, "target_mask": gm}
        if "flow" in t:   # exact warp (synthetic studio): [2,H,W] grid_sample grid, -2 off the garment
            out["flow"] = torch.from_numpy(np.ascontiguousarray(t["flow"].transpose(2, 0, 1), dtype=np.float32))
        return out

    def _tom(self, i):
        # Person wears garment A; the target is the same person wearing garment B, warped here by B's exact flow.
        p, c, t = self.pairs[i]
        a, b, tgt = self.samples[p], self.samples[c], self.samples[t]
        if "flow" not in tgt:
            raise ValueError(f"{self.src.root}: TOM needs paired targets with exact warps (gt-warp/{t}.npz); real "
                             "VITON-HD has none - train TOM on the synthetic studio or on GMM warps")
        warped = warp_with_flow(b["cloth"], tgt["flow"])
        wmask = warp_with_flow(b["cloth_mask"].astype(np.float32), tgt["flow"]) > 0.5
        return {"person": _img(a["image"]), "parse": torch.from_numpy(a["parse"].astype(np.int64)),
                "warped_garment": _img(warped), "warped_mask": _mask(wmask), "target": _img(tgt["image"]),
                "garment": _img(b["cloth"]), "garment_mask": _mask(b["cloth_mask"])}

    def _recolor(self, i):
        # The on-model photo with its garment colour degraded; the target is the true photo, the still is truth.
        s = self.samples[self.ids[i]]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        mode = MODES[int(rng.integers(len(MODES)))]
        degraded = degrade(s["image"], s["garment_mask"], rng, mode, float(rng.uniform(*self.magnitude)))
        return {"on_model": _img(degraded), "still": _img(s["cloth"]),
                "parse": torch.from_numpy(s["parse"].astype(np.int64)), "still_mask": _mask(s["cloth_mask"]),
                "target": _img(s["image"]), "garment_mask": _mask(s["garment_mask"])}
