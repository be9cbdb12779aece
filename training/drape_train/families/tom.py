"""The Try-On Module: render the person wearing the warped garment and the composition mask (L1 on the served
composite and on the render, a mask prior, optional perceptual / style / adversarial terms); scored by PSNR and
SSIM (whole, changed, kept) of what the ensemble serves. It trains and is evaluated on the garment as a trained
GMM warps it where asked (data.warps: gmm), as served. The classical baseline pastes the warped garment."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drape_train.imaging import _img, _mask, warp_with_flow
from drape_train.metrics import masked_l1, psnr, served_tryon, ssim, tryon_ssim
from drape_train.models.representation import labels_to_logits, mask_to_logits

from .base import EvalContext, Family


def naive_paste(b: dict) -> torch.Tensor:
    """The TOM baseline: the warped garment pasted onto the person where the warped mask > 0.5."""
    m = (b["warped_mask"] > 0.5).float()
    return b["person"] * (1 - m) + b["warped_garment"] * m


def _u8(t: torch.Tensor) -> np.ndarray:
    """[3,H,W] float in [0, 1] -> [H,W,3] uint8: what an app sends (the studio's images are 8-bit to begin with)."""
    return np.ascontiguousarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _f(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0).permute(2, 0, 1)


class TOMFamily(Family):
    name = "tom"
    bars = (("ssim", "model >= baseline + 0.05", lambda m, b: m >= b + 0.05),)
    image_terms = True
    disc_condition = 3 + 20 + 3 + 1     # person, parsing logits, warped garment, warped mask
    ensemble = "tryon"

    def length(self, ds):
        return len(ds.pairs)

    def item(self, ds, i):
        # Person wears garment A; the target is the same person wearing garment B, warped here by B's exact flow.
        p, c, t = ds.pairs[i]
        a, b, tgt = ds.samples[p], ds.samples[c], ds.samples[t]
        if "flow" not in tgt:
            raise ValueError(f"{ds.src.root}: TOM needs paired targets with exact warps (gt-warp/{t}.npz); real "
                             "VITON-HD has none - train TOM on the synthetic studio or on GMM warps")
        warped = warp_with_flow(b["cloth"], tgt["flow"])
        wmask = warp_with_flow(b["cloth_mask"].astype(np.float32), tgt["flow"]) > 0.5
        return {"person": _img(a["image"]), "parse": torch.from_numpy(a["parse"].astype(np.int64)),
                "warped_garment": _img(warped), "warped_mask": _mask(wmask), "target": _img(tgt["image"]),
                "garment": _img(b["cloth"]), "garment_mask": _mask(b["cloth_mask"])}

    def inputs(self, b, input_names):
        return b["person"], labels_to_logits(b["parse"]), b["warped_garment"], b["warped_mask"]

    def with_warps(self, obj, b):
        """``b`` with the attached GMM's warp in place of the exact one (when one is attached)."""
        if not obj._warper:
            return b
        with torch.no_grad():
            gmm = obj._warper[0].to(b["garment"].device)
            warped, mask = gmm(labels_to_logits(b["parse"]), b["garment"], mask_to_logits(b["garment_mask"]))
        return {**b, "warped_garment": warped, "warped_mask": mask}

    def train_setup(self, obj, cfg, out, load_objective, console):
        if cfg.data.warps != "gmm":
            return
        gmm_dir = out / "gmm"
        if not (gmm_dir / "weights.pt").exists():
            raise SystemExit(f"tom: data.warps is 'gmm' but {gmm_dir}/weights.pt does not exist; train gmm into the "
                             "same --out first (configs in order: ... gmm tom) or set data.warps: exact")
        obj.attach_warper(load_objective(gmm_dir).net)
        console.print(f"[bold]tom[/]: trains on the garment as {gmm_dir} warps it")

    def loss(self, obj, b, device):
        w = obj.cfg.loss
        ins = obj.inputs(b)
        tryon, edit, rendered, m = obj._run(obj.net.render, device, *ins)
        served = served_tryon(tryon, edit, b["person"])              # the loss sees what users get
        l1 = F.l1_loss(served, b["target"])
        l1_render = masked_l1(rendered, b["target"], edit)             # the render matters where it is used
        mask_reg = (1 - m).abs().mul(b["warped_mask"]).mean()     # prefer the warped garment's own pixels
        extra, logs = obj._image_terms(served, b["target"], torch.cat(ins, 1))
        loss = w.l1 * (l1 + 0.5 * l1_render) + w.mask * mask_reg + extra
        return loss, {"l1": l1, "l1_render": l1_render, **logs}

    def metrics(self, obj, b):
        tryon, edit = obj.net(*obj.inputs(b))
        served = served_tryon(tryon, edit, b["person"])
        return {"psnr": psnr(served, b["target"]), **tryon_ssim(served, b["target"], b["person"]),
                "ssim_render": ssim(tryon, b["target"])}

    def eval_setup(self, ctx: EvalContext):
        # TOM sees what serving gives it: the GMM's warp, not the exact one (so does the paste)
        ctx.obj.attach_warper(ctx.load_objective(ctx.ckpt.parent / "gmm").net)

    def baseline(self, ctx: EvalContext, b):
        for k, v in tryon_ssim(naive_paste(b), b["target"], b["person"]).items():
            ctx.add_base(k, v.numpy())

    def ensemble_metrics(self, client, b):
        """``tryon(person, still)`` -> PSNR and SSIM (whole, swap region, kept region) against the target."""
        out = torch.stack([_f(client.tryon(_u8(p), _u8(g))) for p, g in zip(b["person"], b["garment"])])
        return {"psnr": psnr(out, b["target"]), **tryon_ssim(out, b["target"], b["person"])}
