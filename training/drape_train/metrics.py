"""Loss terms and validation metrics the network families share (torch): Dice, masked L1, colour differences,
SSIM (whole / changed / kept region), the served try-on composite, segmentation scores, PSNR and IoU.
"""
from __future__ import annotations

import kornia
import torch

from drape_core.geometry import feather_sigma


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    inter = (prob * target).sum((-2, -1))
    return (1 - (2 * inter + eps) / (prob.sum((-2, -1)) + target.sum((-2, -1)) + eps)).mean()


def masked_l1(a, b, mask):
    return ((a - b).abs() * mask).sum() / (mask.sum() * a.shape[1] + 1e-6)


def delta_e76(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel CIE76 colour difference [B,1,H,W] between sRGB images in [0,1] (differentiable; zero gradient at
    identical colours, where a plain sqrt has none)."""
    from drape_core.colour import delta_e_76, rgb_to_lab

    return delta_e_76(rgb_to_lab(a.clamp(0, 1), dim=1), rgb_to_lab(b.clamp(0, 1), dim=1), dim=1)[:, None]


def delta_e2000(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel CIEDE2000 [B,1,H,W] between sRGB images in [0,1]."""
    from drape_core.colour import delta_e_2000, rgb_to_lab

    lab_a, lab_b = rgb_to_lab(a.clamp(0, 1), dim=1), rgb_to_lab(b.clamp(0, 1), dim=1)
    return delta_e_2000(lab_a, lab_b, dim=1)[:, None]


def ssim(a, b):
    return kornia.metrics.ssim(a.clamp(0, 1), b.clamp(0, 1), 7).mean((1, 2, 3))


def changed_region(person, target, threshold: float = 0.08):
    """Where a try-on must change the photo: the target differs from the person photo (max over RGB)."""
    return ((target - person).abs().amax(1, keepdim=True) > threshold).float()


def tryon_ssim(image, target, person) -> dict[str, torch.Tensor]:
    """SSIM [N] of a try-on image against its target, from one SSIM map: the whole image (`ssim`), where the
    target differs from the person photo (`ssim_changed`: the garment swap) and elsewhere (`ssim_kept`)."""
    s = kornia.metrics.ssim(image.clamp(0, 1), target.clamp(0, 1), 7).mean(1, keepdim=True)
    changed = changed_region(person, target)
    return {"ssim": s.mean((1, 2, 3)),
            "ssim_changed": (s * changed).sum((1, 2, 3)) / changed.sum((1, 2, 3)).clamp_min(1),
            "ssim_kept": (s * (1 - changed)).sum((1, 2, 3)) / (1 - changed).sum((1, 2, 3)).clamp_min(1)}


def served_tryon(tryon: torch.Tensor, edit_mask: torch.Tensor, person: torch.Tensor) -> torch.Tensor:
    """What the try-on ensemble returns, at model resolution: TOM's image inside the feathered edit mask, the
    person photo's own pixels outside (`drape_runtime.prepost.tryon_composite` in torch, same Gaussian: cv2's
    kernel size for float images, replicated border)."""
    s = feather_sigma(tryon.shape[-2])
    k = 2 * int(round(4 * s)) + 1
    m = kornia.filters.gaussian_blur2d(edit_mask, (k, k), (s, s), border_type="replicate").clamp(0, 1)
    return person * (1 - m) + tryon * m


def seg_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU, Dice, precision and recall per sample for boolean masks [B,1,H,W] (empty vs empty counts as 1)."""
    tp = (pred & target).sum((1, 2, 3)).float()
    fp = (pred & ~target).sum((1, 2, 3)).float()
    fn = (~pred & target).sum((1, 2, 3)).float()

    def ratio(n, d):
        return torch.where(d > 0, n / d.clamp_min(1), torch.ones_like(n))

    return {"iou": ratio(tp, tp + fp + fn), "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def psnr(a, b):
    mse = ((a - b) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (pred & target).sum((-2, -1)).float()
    union = (pred | target).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
