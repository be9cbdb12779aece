"""Segmentation families: garment_seg (the still's garment mask) and the research onmodel_seg (the worn garment's
visible region from the photo and its still). Both train on BCE + Dice (and optional focal, Tversky, boundary
terms) and are scored by IoU; garment_seg's classical baseline is a colour-distance Otsu cut."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.filters import threshold_otsu

from drape_core.colour import rgb_to_lab
from drape_train.imaging import _img, _mask
from drape_train.losses import boundary_loss, focal_loss, tversky_loss
from drape_train.metrics import dice_loss, seg_metrics

from .base import EvalContext, Family, _np


def seg_baseline(image: np.ndarray) -> np.ndarray:
    lab = rgb_to_lab(image)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    dist = np.linalg.norm(lab - np.median(border, 0), axis=-1)
    mask = dist > threshold_otsu(dist)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n:
        mask = labels == (1 + np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    return ndimage.binary_fill_holes(mask)


class _MaskFamily(Family):
    def loss(self, obj, b, device):
        w = obj.cfg.loss
        logits = obj._run(obj.net, device, *obj.inputs(b))
        prob, m = torch.sigmoid(logits), b["mask"]
        bce = F.binary_cross_entropy_with_logits(logits, m)
        dice = dice_loss(prob, m)
        loss, logs = bce + w.dice * dice, {"bce": bce, "dice": dice}
        for name, weight, fn in (("focal", w.focal, lambda: focal_loss(logits, m)),
                                 ("tversky", w.tversky, lambda: tversky_loss(prob, m)),
                                 ("boundary", w.boundary, lambda: boundary_loss(prob, m))):
            if weight:
                logs[name] = fn()
                loss = loss + weight * logs[name]
        return loss, logs

    def metrics(self, obj, b):
        return seg_metrics(obj.net(*obj.inputs(b)) > 0, b["mask"] > 0.5)


class GarmentSeg(_MaskFamily):
    name = "garment_seg"
    bars = (("iou", "model >= 0.97", lambda m, b: m >= 0.97),)

    def item(self, ds, i):
        s = ds.samples[ds.ids[i]]
        return {"image": _img(s["cloth"]), "mask": _mask(s["cloth_mask"])}

    def inputs(self, b, input_names):
        return (b["image"],)

    def baseline(self, ctx: EvalContext, b):
        pred = torch.from_numpy(np.stack([seg_baseline(x) for x in _np(b["image"])]))[:, None]
        for k, v in seg_metrics(pred, b["mask"] > 0.5).items():
            ctx.add_base(k, v.numpy())


class OnModelSeg(_MaskFamily):
    name = "onmodel_seg"
    bars = (("iou", "model >= 0.90", lambda m, b: m >= 0.90),)
    compares_variants = True

    def item(self, ds, i):
        # The person photo and the still of the garment that same photo shows (one sample id: the same garment);
        # the target is the worn garment's visible region (parse labels of the garment).
        s = ds.samples[ds.ids[i]]
        return {"on_model": _img(s["image"]), "still": _img(s["cloth"]), "mask": _mask(s["garment_mask"])}

    def inputs(self, b, input_names):   # the variant decides: the photo alone, or the photo and the still
        return tuple(b[n] for n in input_names)
