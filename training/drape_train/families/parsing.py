"""Human parsing: the 20 LIP labels of the person photo (cross-entropy + Dice, scored by mIoU); the classical
baseline is the training split's per-pixel majority label."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drape_train.imaging import _img
from drape_train.metrics import dice_loss, iou
from drape_train.models.representation import NUM_LABELS

from .base import EvalContext, Family


def parsing_prior(train) -> np.ndarray:
    counts = None
    for sid in train.ids:
        p = train.samples[sid]["parse"].astype(np.int64)
        onehot = np.eye(NUM_LABELS, dtype=np.int32)[p]
        counts = onehot if counts is None else counts + onehot
    return counts.argmax(-1)


class HumanParsing(Family):
    name = "human_parsing"
    bars = (("miou", "model >= 0.90", lambda m, b: m >= 0.90),)

    def card_labels(self):
        from drape_train.data.synth import LIP_LABELS
        return list(LIP_LABELS)

    def item(self, ds, i):
        s = ds.samples[ds.ids[i]]
        return {"image": _img(s["image"]), "parse": torch.from_numpy(s["parse"].astype(np.int64))}

    def inputs(self, b, input_names):
        return (b["image"],)

    def loss(self, obj, b, device):
        w = obj.cfg.loss
        logits = obj._run(obj.net, device, b["image"])
        ce = F.cross_entropy(logits, b["parse"])
        onehot = F.one_hot(b["parse"], NUM_LABELS).permute(0, 3, 1, 2).float()
        dice = dice_loss(torch.softmax(logits, 1), onehot)
        return ce + w.dice * dice, {"ce": ce, "dice": dice}

    def metrics(self, obj, b):
        pred = obj.net(b["image"]).argmax(1)
        ious = []
        for c in range(NUM_LABELS):
            p, t = pred == c, b["parse"] == c
            present = t.any(-1).any(-1)
            ious.append(torch.where(present, iou(p, t), torch.full_like(iou(p, t), float("nan"))))
        per = torch.stack(ious, 1)
        return {"miou": torch.nanmean(per, 1), "pixel_acc": (pred == b["parse"]).float().mean((1, 2))}

    def eval_setup(self, ctx: EvalContext):
        ctx.state = parsing_prior(ctx.dataset(ctx.data, "train", self.name))

    def baseline(self, ctx: EvalContext, b):
        pred = torch.from_numpy(np.broadcast_to(ctx.state, b["parse"].shape).copy())
        ious = [torch.where((b["parse"] == c).any(-1).any(-1), iou(pred == c, b["parse"] == c),
                            torch.tensor(float("nan"))) for c in range(NUM_LABELS)]
        ctx.add_base("miou", np.nanmean(torch.stack(ious, 1).numpy(), 1))
