"""Recolor: give the on-model photo the still's garment colour (masked L1 + CIE76 in Lab, optional perceptual /
style / adversarial terms); scored by CIEDE2000 inside the garment, for the network and as served (the keep-gate
and still fallback of ``drape_core.recolor_policy``). The classical baseline is Reinhard's transfer in Lab."""
from __future__ import annotations

import numpy as np
import torch

from drape_core.colour import lab_to_rgb, rgb_to_lab
from drape_core.recolor_policy import RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW, recolor_choose
from drape_train.data.degrade import MODES, degrade
from drape_train.imaging import _img, _mask
from drape_train.metrics import delta_e2000, delta_e76, masked_l1, psnr, ssim
from drape_train.models.representation import labels_to_logits, mask_to_logits

from .base import EvalContext, Family, _np
from .tom import _f, _u8


def reinhard(on_model: np.ndarray, mask: np.ndarray, still: np.ndarray, still_mask: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001 colour transfer in Lab, restricted to the garment regions."""
    out = on_model.copy()
    if mask.sum() < 2 or still_mask.sum() < 2:
        return out
    src, ref = rgb_to_lab(on_model), rgb_to_lab(still)
    s, r = src[mask], ref[still_mask]
    moved = (s - s.mean(0)) / (s.std(0) + 1e-6) * r.std(0) + r.mean(0)
    lab = src.copy()
    lab[mask] = moved
    out[mask] = lab_to_rgb(lab[mask])   # the moved Lab values leave the sRGB gamut; clipping them is the method
    return out


@torch.no_grad()
def served_recolor(obj, b: dict, fallback_margin: float = RECOLOR_FALLBACK_MARGIN) -> torch.Tensor:
    """Per-pixel CIEDE2000 [B,H,W] of what the recolor ensemble returns, at model resolution: the photo as it is
    where the network changes the garment (its own mask) by less than the postprocess threshold
    (`drape_core.recolor_policy.recolor_change` < RECOLOR_KEEP_BELOW), else the classical transfer where it fits the
    still better (`drape_core.recolor_policy.recolor_fallback`), else the network's output: `recolor_choose`, the code
    the postprocess runs."""
    inputs = obj.inputs(b)
    out, m = obj.net(*inputs)
    served = [recolor_choose(o, i, g, RECOLOR_KEEP_BELOW, s, sl, fallback_margin)[0]
              for o, i, g, s, sl in zip(out.numpy(), b["on_model"].numpy(), m.numpy(), b["still"].numpy(),
                                        inputs[3].numpy())]
    return delta_e2000(torch.from_numpy(np.stack(served)), b["target"])[:, 0]


class Recolor(Family):
    name = "recolor"
    bars = (("delta_e2000", "model <= 0.5 x baseline and <= 2.0", lambda m, b: m <= 0.5 * b and m <= 2.0),)
    image_terms = True
    disc_condition = 3 + 3              # on-model photo, still
    ensemble = "recolor"

    def item(self, ds, i):
        # The on-model photo with its garment colour degraded; the target is the true photo, the still is truth.
        s = ds.samples[ds.ids[i]]
        rng = np.random.default_rng([ds.seed, ds.epoch, i])
        mode = MODES[int(rng.integers(len(MODES)))]
        degraded = degrade(s["image"], s["garment_mask"], rng, mode, float(rng.uniform(*ds.magnitude)))
        return {"on_model": _img(degraded), "still": _img(s["cloth"]),
                "parse": torch.from_numpy(s["parse"].astype(np.int64)), "still_mask": _mask(s["cloth_mask"]),
                "target": _img(s["image"]), "garment_mask": _mask(s["garment_mask"])}

    def inputs(self, b, input_names):
        return b["on_model"], b["still"], labels_to_logits(b["parse"]), mask_to_logits(b["still_mask"])

    def loss(self, obj, b, device):
        w = obj.cfg.loss
        out, _ = obj._run(obj.net, device, *obj.inputs(b))
        gm = b["garment_mask"]
        l1 = masked_l1(out, b["target"], gm)
        de = (delta_e76(out, b["target"]) * gm).sum() / (gm.sum() + 1e-6)
        extra, logs = obj._image_terms(out, b["target"], torch.cat([b["on_model"], b["still"]], 1))
        return w.l1 * l1 + w.delta_e * de + extra, {"l1": l1, "delta_e76": de, **logs}

    def metrics(self, obj, b):
        out, _ = obj.net(*obj.inputs(b))
        gm = b["garment_mask"]
        de = (delta_e76(out, b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        base = (delta_e76(b["on_model"], b["target"]) * gm).sum((1, 2, 3)) / gm.sum((1, 2, 3)).clamp_min(1)
        inside = gm[:, 0] > 0.5
        de00 = delta_e2000(out, b["target"])[:, 0][inside]
        return {"delta_e76": de, "delta_e76_input": base, "px_delta_e2000": de00, "psnr": psnr(out, b["target"]),
                "ssim": ssim(out, b["target"])}

    def baseline(self, ctx: EvalContext, b):
        gm, sm = _np(b["garment_mask"])[..., 0] > 0.5, _np(b["still_mask"])[..., 0] > 0.5
        out = np.stack([reinhard(o, m, s, q) for o, m, s, q in zip(_np(b["on_model"]), gm, _np(b["still"]), sm)])
        de = delta_e2000(torch.from_numpy(out).permute(0, 3, 1, 2).float(), b["target"])[:, 0]
        ctx.add_base("px_delta_e2000", de[b["garment_mask"][:, 0] > 0.5].numpy())
        # doing nothing: where the model's error is above this, it makes the photo worse
        de_in = delta_e2000(b["on_model"], b["target"])[:, 0]
        ctx.add_model("delta_e2000_input", de_in[b["garment_mask"][:, 0] > 0.5].numpy())
        # as served: recolor_postprocess keeps the photo where the network would barely change it and
        # falls back to the classical transfer where that fits the still better
        ctx.add_model("px_delta_e2000_served", served_recolor(ctx.obj, b)[b["garment_mask"][:, 0] > 0.5].numpy())

    def ensemble_metrics(self, client, b):
        """``recolor(on-model photo, still)`` -> per-pixel CIEDE2000 inside the true garment."""
        out = torch.stack([_f(client.recolor(_u8(o), _u8(s)).image) for o, s in zip(b["on_model"], b["still"])])
        return {"px_delta_e2000": delta_e2000(out, b["target"])[:, 0][b["garment_mask"][:, 0] > 0.5]}

    def report(self, ds):
        return {"magnitude": list(ds.magnitude)}
