"""The training objective: the network, its loss and validation metrics (asked of its family, drape_train.families).

`Objective` wraps the network so DeepSpeed's engine runs forward *and* loss: engine(batch) -> (loss, logs).
The wrapped network is `objective.net`; only its weights are exported. The GAN discriminator, the VGG terms and
the autocast handling are the same for every family and live here.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from drape_core.card import read_card
from drape_train.config import TrainConfig
from drape_train.families import family
from drape_train.losses import PatchDiscriminator, load_vgg, perceptual_and_style
# The shared loss terms and metrics, importable from here as before
from drape_train.metrics import (changed_region, delta_e76, delta_e2000, dice_loss, iou, masked_l1,  # noqa: F401
                                 psnr, seg_metrics, served_tryon, ssim, tryon_ssim)


class Objective(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.name = cfg.network
        self.family = family(cfg.network)    # what differs per network (drape_train.families)
        self.net = self.family.build(cfg)
        w = cfg.loss
        # Kept out of the module tree on purpose: frozen, and 80 MB that must not enter every checkpoint.
        self._vgg = None
        if (w.perceptual or w.style) and self.family.image_terms:
            self._vgg = load_vgg(w.vgg19_weights or os.environ.get("DRAPE_VGG19_WEIGHTS"))
        self.disc = None
        if w.gan and self.family.image_terms:
            self.disc = PatchDiscriminator(self.family.disc_condition + 3)
        self._gan_cache: tuple | None = None
        self._amp: torch.dtype | None = None  # the autocast dtype forward() runs the network in (None: float32)
        self._warper: list[nn.Module] = []   # tom with data.warps = gmm: the frozen GMM (a list: not a submodule)

    def attach_warper(self, gmm: nn.Module) -> None:
        """TOM trains on the garment as this (frozen) GMM warps it instead of the exact warp."""
        self._warper = [gmm.eval().requires_grad_(False)]

    def with_warps(self, b: dict) -> dict:
        """``b`` with the attached GMM's warp in place of the exact one (TOM only; unchanged otherwise)."""
        return self.family.with_warps(self, b)

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
        return self.family.inputs(b, self.net.input_names)

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
        return self.family.loss(self, self.with_warps(b), device)

    @torch.no_grad()
    def metrics(self, b: dict) -> dict[str, torch.Tensor]:
        """Per-sample validation metrics [B] for one batch; the mean over the split is reported."""
        return self.family.metrics(self, self.with_warps(b))


def load_objective(ckpt: Path) -> Objective:
    """The objective of a trained network: its card's config and its best weights (``<ckpt>/weights.pt``)."""
    obj = Objective(TrainConfig.model_validate(read_card(ckpt).config))
    obj.net.load_state_dict(torch.load(ckpt / "weights.pt", map_location="cpu", weights_only=True))
    return obj.eval()
