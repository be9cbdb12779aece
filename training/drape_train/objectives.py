"""Loss and validation metrics per network.

`Objective` wraps the network so DeepSpeed's engine runs forward *and* loss: engine(batch) -> (loss, logs).
The wrapped network is `objective.net`; only its weights are exported.
"""
from __future__ import annotations

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F

import os

from drape_core.geometry import feather_sigma
from drape_train.config import TrainConfig
from drape_train.losses import PatchDiscriminator, boundary_loss, focal_loss, load_vgg, perceptual_and_style, tversky_loss
from drape_train.models import build
from drape_train.models.gmm import smoothness
from drape_train.models.representation import NUM_LABELS, labels_to_logits, mask_to_logits


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


class Objective(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.name = cfg.network
        self.net = build(cfg.network, cfg.model.widths, cfg.data.height, cfg.data.width, **cfg.model_kwargs)
        w = cfg.loss
        # Kept out of the module tree on purpose: frozen, and 80 MB that must not enter every checkpoint.
        self._vgg = None
        if (w.perceptual or w.style) and self.name in ("tom", "recolor"):
            self._vgg = load_vgg(w.vgg19_weights or os.environ.get("DRAPE_VGG19_WEIGHTS"))
        self.disc = None
        if w.gan and self.name in ("tom", "recolor"):
            cond = 3 + 20 + 3 + 1 if self.name == "tom" else 3 + 3
            self.disc = PatchDiscriminator(cond + 3)
        self._gan_cache: tuple | None = None
        self._amp: torch.dtype | None = None  # the autocast dtype forward() runs the network in (None: float32)
        self._warper: list[nn.Module] = []   # tom with data.warps = gmm: the frozen GMM (a list: not a submodule)

    def attach_warper(self, gmm: nn.Module) -> None:
        """TOM trains on the garment as this (frozen) GMM warps it instead of the exact warp."""
        self._warper = [gmm.eval().requires_grad_(False)]

    def with_warps(self, b: dict) -> dict:
        """``b`` with the attached GMM's warp in place of the exact one (TOM only; unchanged otherwise)."""
        if self.name != "tom" or not self._warper:
            return b
        with torch.no_grad():
            gmm = self._warper[0].to(b["garment"].device)
            warped, mask = gmm(labels_to_logits(b["parse"]), b["garment"], mask_to_logits(b["garment_mask"]))
        return {**b, "warped_garment": warped, "warped_mask": mask}

    def generator_parameters(self):
        """What the DeepSpeed engine optimizes: everything but the discriminator (it has its own optimizer)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("disc.")]

    def _image_terms(self, pred, target, cond) -> tuple[torch.Tensor, dict]:
        """Perceptual, style and adversarial terms for image outputs (zero when disabled)."""
        w, logs = self.cfg.loss, {}
        total = pred.new_zeros(())
        if self._vgg is not None:
            p, s = perceptual_and_style(self._vgg.to(pred.device), pred, target)
            total = total + w.perceptual * p + w.style * s
            logs.update(perceptual=p, style=s)
        if self.disc is not None:
            self.disc.requires_grad_(False)
            adv = F.softplus(-self.disc(torch.cat([cond, pred], 1))).mean()    # non-saturating GAN loss
            self.disc.requires_grad_(True)
            total = total + w.gan * adv
            logs["adv"] = adv
            self._gan_cache = (cond.detach(), pred.detach(), target.detach())
        return total, logs

    def discriminator_loss(self) -> torch.Tensor | None:
        """D step on the last generator batch: real = (cond, target), fake = (cond, prediction)."""
        if self.disc is None or self._gan_cache is None:
            return None
        cond, fake, real = self._gan_cache
        return (F.softplus(-self.disc(torch.cat([cond, real], 1))).mean()
                + F.softplus(self.disc(torch.cat([cond, fake], 1))).mean())

    def inputs(self, b: dict) -> tuple:
        """The network's exported inputs, built from a batch (ground-truth parses become logits)."""
        if self.name in ("garment_seg", "human_parsing"):
            return (b["image"],)
        if self.name == "onmodel_seg":   # the variant decides: the photo alone, or the photo and the still
            names = getattr(self, "input_names", None) or self.net.input_names
            return tuple(b[n] for n in names)
        if self.name == "gmm":
            return labels_to_logits(b["parse"]), b["garment"], mask_to_logits(b["garment_mask"])
        if self.name == "tom":
            return b["person"], labels_to_logits(b["parse"]), b["warped_garment"], b["warped_mask"]
        return b["on_model"], b["still"], labels_to_logits(b["parse"]), mask_to_logits(b["still_mask"])

    def forward(self, b: dict) -> tuple[torch.Tensor, dict]:
        """Loss and its terms for one batch. Under the engine's autocast (ds_config `torch_autocast`) the network
        runs in the lower precision and everything else in float32: its outputs are cast up and autocast is off
        for the losses (colour differences, SSIM, the TPS grid, the perceptual and adversarial terms)."""
        device = next(iter(b.values())).device.type
        self._amp = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        with torch.autocast(device, enabled=False):
            return self._forward(b, device)

    def _run(self, fn, device: str, *args):
        """``fn`` (the network or one of its stages) under the autocast forward() found, outputs in float32."""
        with torch.autocast(device, dtype=self._amp or torch.bfloat16, enabled=self._amp is not None):
            out = fn(*args)
        return tuple(o if o is None else o.float() for o in out) if isinstance(out, tuple) else out.float()

    def _forward(self, b: dict, device: str) -> tuple[torch.Tensor, dict]:
        w = self.cfg.loss
        b = self.with_warps(b)
        if self.name in ("garment_seg", "onmodel_seg"):
            logits = self._run(self.net, device, *self.inputs(b))
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
        if self.name == "human_parsing":
            logits = self._run(self.net, device, b["image"])
            ce = F.cross_entropy(logits, b["parse"])
            onehot = F.one_hot(b["parse"], NUM_LABELS).permute(0, 3, 1, 2).float()
            dice = dice_loss(torch.softmax(logits, 1), onehot)
            return ce + w.dice * dice, {"ce": ce, "dice": dice}
        if self.name == "gmm":
            args = self.inputs(b)
            points, rgb, tps_mask, gate_logits, served = self._run(self.net.warp, device, *args)
            l1 = masked_l1(rgb, b["target"], b["target_mask"] + tps_mask.detach())
            # The mask terms score the TPS mask on its own, and the gated one as well when there is a gate: scored
            # only through the gate, the warp learns to cover everything and leave the cutting to it (val TPS IoU
            # 0.27 at step 200), which puts the still's pattern in the wrong place for TOM.
            masks = (tps_mask,) if gate_logits is None else (tps_mask, served)
            mask = sum(F.l1_loss(m, b["target_mask"]) for m in masks)
            smooth = smoothness(points, self.net.grid_size)
            loss, logs = w.l1 * l1 + w.mask * mask + w.smooth * smooth, {"l1": l1, "mask": mask, "smooth": smooth}
            if w.mask_dice:   # the overlap the metric counts, where L1 on the mask weighs every pixel alike
                logs["mask_dice"] = sum(dice_loss(m, b["target_mask"]) for m in masks)
                loss = loss + w.mask_dice * logs["mask_dice"]
            if w.gate and gate_logits is not None:   # where the warp covers, is the garment visible there?
                inside = tps_mask.detach()
                bce = F.binary_cross_entropy_with_logits(gate_logits, b["target_mask"], reduction="none")
                logs["gate"] = (bce * inside).sum() / (inside.sum() + 1e-6)
                loss = loss + w.gate * logs["gate"]
            if w.flow and "flow" in b:   # synthetic data knows the exact warp: supervise the grid on garment pixels
                valid = (b["flow"][:, :1] > -1.5).float() * b["target_mask"]
                grid = self.net.grid(points)
                logs["flow"] = ((grid.permute(0, 3, 1, 2) - b["flow"]).abs() * valid).sum() / (2 * valid.sum() + 1e-6)
                loss = loss + w.flow * logs["flow"]
            return loss, logs
        if self.name == "tom":
            ins = self.inputs(b)
            tryon, edit, rendered, m = self._run(self.net.render, device, *ins)
            served = served_tryon(tryon, edit, b["person"])              # the loss sees what users get
            l1 = F.l1_loss(served, b["target"])
            l1_render = masked_l1(rendered, b["target"], edit)             # the render matters where it is used
            mask_reg = (1 - m).abs().mul(b["warped_mask"]).mean()     # prefer the warped garment's own pixels
            extra, logs = self._image_terms(served, b["target"], torch.cat(ins, 1))
            loss = w.l1 * (l1 + 0.5 * l1_render) + w.mask * mask_reg + extra
            return loss, {"l1": l1, "l1_render": l1_render, **logs}
        out, _ = self._run(self.net, device, *self.inputs(b))
        gm = b["garment_mask"]
        l1 = masked_l1(out, b["target"], gm)
        de = (delta_e76(out, b["target"]) * gm).sum() / (gm.sum() + 1e-6)
        extra, logs = self._image_terms(out, b["target"], torch.cat([b["on_model"], b["still"]], 1))
        return w.l1 * l1 + w.delta_e * de + extra, {"l1": l1, "delta_e76": de, **logs}

    @torch.no_grad()
    def metrics(self, b: dict) -> dict[str, torch.Tensor]:
        """Per-sample validation metrics [B] for one batch; the mean over the split is reported."""
        b = self.with_warps(b)
        if self.name in ("garment_seg", "onmodel_seg"):
            return seg_metrics(self.net(*self.inputs(b)) > 0, b["mask"] > 0.5)
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
            _, _, tps_mask, _, wmask = self.net.warp(*self.inputs(b))
            t = b["target_mask"] > 0.5
            return {"warped_mask_iou": iou(wmask > 0.5, t).squeeze(1),        # as served (gated, when gated)
                    "warped_mask_iou_tps": iou(tps_mask > 0.5, t).squeeze(1)}  # the TPS warp's own mask
        if self.name == "tom":
            tryon, edit = self.net(*self.inputs(b))
            served = served_tryon(tryon, edit, b["person"])
            return {"psnr": psnr(served, b["target"]), **tryon_ssim(served, b["target"], b["person"]),
                    "ssim_render": ssim(tryon, b["target"])}
        out, _ = self.net(*self.inputs(b))
        gm = b["garment_mask"]
        de = (delta_e76(out, b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        base = (delta_e76(b["on_model"], b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        inside = gm[:, 0] > 0.5
        de00 = delta_e2000(out, b["target"])[:, 0][inside]
        return {"delta_e76": de, "delta_e76_input": base, "px_delta_e2000": de00, "psnr": psnr(out, b["target"]),
                "ssim": ssim(out, b["target"])}
