"""Loss and validation metrics per network.

`Objective` wraps the network so DeepSpeed's engine runs forward *and* loss: engine(batch) -> (loss, logs).
The wrapped network is `objective.net`; only its weights are exported.
"""
from __future__ import annotations

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F

from drape_train.config import TrainConfig
from drape_train.models import build
from drape_train.models.gmm import smoothness
from drape_train.models.representation import NUM_LABELS, labels_to_logits, mask_to_logits


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    inter = (prob * target).sum((-2, -1))
    return (1 - (2 * inter + eps) / (prob.sum((-2, -1)) + target.sum((-2, -1)) + eps)).mean()


def masked_l1(a, b, mask):
    return ((a - b).abs() * mask).sum() / (mask.sum() * a.shape[1] + 1e-6)


def delta_e76(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel CIE76 colour difference [B,1,H,W] between sRGB images in [0,1] (differentiable, kornia)."""
    la, lb = kornia.color.rgb_to_lab(a.clamp(0, 1)), kornia.color.rgb_to_lab(b.clamp(0, 1))
    return ((la - lb) ** 2).sum(1, keepdim=True).add(1e-8).sqrt()


def psnr(a, b):
    mse = ((a - b) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (pred & target).sum((-2, -1)).float()
    union = (pred | target).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


class Objective(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.name = cfg.network
        self.net = build(cfg.network, cfg.model.widths, cfg.data.height, cfg.data.width, **cfg.model_kwargs)

    def inputs(self, b: dict) -> tuple:
        """The network's exported inputs, built from a batch (ground-truth parses become logits)."""
        if self.name in ("garment_seg", "human_parsing"):
            return (b["image"],)
        if self.name == "gmm":
            return labels_to_logits(b["parse"]), b["garment"], mask_to_logits(b["garment_mask"])
        if self.name == "tom":
            return b["person"], labels_to_logits(b["parse"]), b["warped_garment"], b["warped_mask"]
        return b["on_model"], b["still"], labels_to_logits(b["parse"]), mask_to_logits(b["still_mask"])

    def forward(self, b: dict) -> tuple[torch.Tensor, dict]:
        w = self.cfg.loss
        if self.name == "garment_seg":
            logits = self.net(b["image"])
            bce = F.binary_cross_entropy_with_logits(logits, b["mask"])
            dice = dice_loss(torch.sigmoid(logits), b["mask"])
            return bce + w.dice * dice, {"bce": bce, "dice": dice}
        if self.name == "human_parsing":
            logits = self.net(b["image"])
            ce = F.cross_entropy(logits, b["parse"])
            onehot = F.one_hot(b["parse"], NUM_LABELS).permute(0, 3, 1, 2).float()
            dice = dice_loss(torch.softmax(logits, 1), onehot)
            return ce + w.dice * dice, {"ce": ce, "dice": dice}
        if self.name == "gmm":
            args = self.inputs(b)
            points = self.net.control_points(*args)
            warped = F.grid_sample(torch.cat([b["garment"], b["garment_mask"]], 1), self.net.grid(points),
                                   align_corners=False)
            l1 = masked_l1(warped[:, :3], b["target"], b["target_mask"] + warped[:, 3:4].detach())
            mask = F.l1_loss(warped[:, 3:4], b["target_mask"])
            smooth = smoothness(points, self.net.grid_size)
            return w.l1 * l1 + w.mask * mask + w.smooth * smooth, {"l1": l1, "mask": mask, "smooth": smooth}
        if self.name == "tom":
            tryon, _, rendered, m = self.net.render(*self.inputs(b))
            l1 = F.l1_loss(tryon, b["target"])
            l1_render = F.l1_loss(rendered, b["target"])
            mask_reg = (1 - m).abs().mul(b["warped_mask"]).mean()     # prefer the warped garment's own pixels
            return w.l1 * (l1 + 0.5 * l1_render) + w.mask * mask_reg, {"l1": l1, "l1_render": l1_render}
        out, _ = self.net(*self.inputs(b))
        gm = b["garment_mask"]
        l1 = masked_l1(out, b["target"], gm)
        de = (delta_e76(out, b["target"]) * gm).sum() / (gm.sum() + 1e-6)
        return w.l1 * l1 + w.delta_e * de, {"l1": l1, "delta_e76": de}

    @torch.no_grad()
    def metrics(self, b: dict) -> dict[str, torch.Tensor]:
        """Per-sample validation metrics [B] for one batch; the mean over the split is reported."""
        if self.name == "garment_seg":
            pred = self.net(b["image"]) > 0
            return {"iou": iou(pred, b["mask"] > 0.5).squeeze(1)}
        if self.name == "human_parsing":
            pred = self.net(b["image"]).argmax(1)
            ious = []
            for c in range(NUM_LABELS):
                p, t = pred == c, b["parse"] == c
                present = t.any(-1).any(-1)
                ious.append(torch.where(present, iou(p, t), torch.full_like(iou(p, t), float("nan"))))
            per = torch.stack(ious, 1)
            return {"miou": torch.nanmean(per, 1), "pixel_acc": (pred == b["parse"]).float().mean((1, 2))}
        if self.name == "gmm":
            _, wmask = self.net(*self.inputs(b))
            return {"warped_mask_iou": iou(wmask > 0.5, b["target_mask"] > 0.5).squeeze(1)}
        if self.name == "tom":
            tryon, _ = self.net(*self.inputs(b))
            return {"psnr": psnr(tryon, b["target"]), "ssim": kornia.metrics.ssim(tryon, b["target"], 7).mean((1, 2, 3))}
        out, _ = self.net(*self.inputs(b))
        gm = b["garment_mask"]
        de = (delta_e76(out, b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        base = (delta_e76(b["on_model"], b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        return {"delta_e76": de, "delta_e76_input": base, "psnr": psnr(out, b["target"])}
