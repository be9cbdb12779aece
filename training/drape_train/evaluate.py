"""Evaluate trained networks on a held-out split, each beside a classical baseline on the same images.

    python -m drape_train.evaluate --checkpoints build/checkpoints --data data/synth --split test

Baselines (no learning, same inputs the network gets):
  garment_seg    border-colour model: Otsu threshold on the Lab distance to the median border colour, holes filled
  human_parsing  spatial prior: the per-pixel most frequent label of the training split
  gmm            bounding-box affine: the still's garment box mapped onto the torso box read off the
                 garment-agnostic parse (chin to waistband, silhouette width without arms). The bar is scored
                 on paired data (each person with their own garment's still, as VITON trains); the unpaired
                 score (another garment's still on the same person, what try-on serves) is printed beside it.
                 warped_mask_iou is the mask the GMM serves (gated by its visibility gate when it has one);
                 warped_mask_iou_tps is the TPS warp's own mask, before the gate
  tom            naive paste: the warped garment pasted onto the person where the warped mask > 0.5
                 (both TOM and the paste get the garment as the trained GMM warps it: the served chain).
                 TOM is scored on what the try-on ensemble returns: its image inside the feathered edit mask,
                 the person's own pixels outside (`objectives.served_tryon`); ssim_render is the raw U-Net image;
                 ssim_changed / ssim_kept split the SSIM map where the target differs from the person photo
                 (the garment swap) and where it does not (what a try-on must leave alone)
  recolor        Reinhard transfer: Lab mean/std of the on-model garment matched to the still's garment
  --served-by    (tom, recolor) also send every test item to a running server's ensembles (`tryon`, `recolor`)
                 and score what comes back against the same targets: `*_ensemble` metrics, the whole served chain
                 (the parsing and garment-segmentation networks instead of ground-truth labels, ONNX Runtime or
                 TensorRT, 8-bit images), where the rows above score each network on ground-truth inputs
  onmodel_seg    the human_parsing network's garment labels (what the recolor ensemble uses today); every
                 onmodel_seg checkpoint given with --onmodel (single / dual variants, seeds) runs on the same
                 images, dual - single IoU is reported per seed with a paired bootstrap 95% interval, and each
                 dual model is run once more with the still of another garment (its pair partner's): if the
                 IoU drops, the model reads the still
The quality bars of the product are checked and printed beside the numbers; exit status 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy import ndimage
from skimage.filters import threshold_otsu
from torch.utils.data import DataLoader

from drape_core.card import ModelCard, read_card
from drape_core.colour import lab_to_rgb, rgb_to_lab
from drape_core.recolor_policy import RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW, recolor_choose
from drape_train.config import TrainConfig
from drape_train.data.layout import RECOLOR_MAGNITUDE
from drape_train.datasets import NetworkDataset, _img
from drape_train.models import NETWORKS
from drape_train.models.representation import (ARMS, HEAD, LOWER, NUM_LABELS, ParsingGroups, garment_prob)
from drape_train.objectives import Objective, delta_e2000, iou, psnr, seg_metrics, tryon_ssim

console = Console(width=None if sys.stdout.isatty() else 150)


def load_objective(ckpt: Path) -> Objective:
    obj = Objective(TrainConfig.model_validate(read_card(ckpt).config))
    obj.net.load_state_dict(torch.load(ckpt / "weights.pt", map_location="cpu", weights_only=True))
    return obj.eval()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy() if t.ndim == 4 else t.numpy()


# ---------------------------------------------------------------------------------------------- baselines

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


def parsing_prior(train: NetworkDataset) -> np.ndarray:
    counts = None
    for sid in train.ids:
        p = train.samples[sid]["parse"].astype(np.int64)
        onehot = np.eye(NUM_LABELS, dtype=np.int32)[p]
        counts = onehot if counts is None else counts + onehot
    return counts.argmax(-1)


def torso_box(parse: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) from chin to waistband, silhouette without arms: only garment-agnostic labels."""
    head = np.isin(parse, HEAD)
    lower = np.isin(parse, LOWER)
    if not head.any() or not lower.any():
        return None
    y0 = int(np.nonzero(head.any(1))[0].max())
    y1 = int(np.nonzero(lower.any(1))[0].min())
    body = (parse > 0) & ~np.isin(parse, ARMS) & ~head
    cols = np.nonzero(body[y0:max(y1, y0 + 1)].any(0))[0]
    if y1 <= y0 or cols.size == 0:
        return None
    return int(cols.min()), y0, int(cols.max()), y1


def bbox_affine_warp(cloth_mask: np.ndarray, parse: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(cloth_mask > 0.5)
    box = torso_box(parse)
    if box is None or ys.size == 0:
        return np.zeros_like(cloth_mask)
    sx0, sy0, sx1, sy1 = xs.min(), ys.min(), xs.max(), ys.max()
    x0, y0, x1, y1 = box
    a = np.float32([[(x1 - x0) / max(sx1 - sx0, 1), 0, 0], [0, (y1 - y0) / max(sy1 - sy0, 1), 0]])
    a[0, 2], a[1, 2] = x0 - a[0, 0] * sx0, y0 - a[1, 1] * sy0
    h, w = cloth_mask.shape
    return cv2.warpAffine(cloth_mask.astype(np.float32), a, (w, h), flags=cv2.INTER_LINEAR)


def bbox_affine_iou(b: dict) -> np.ndarray:
    """Per-item warped-mask IoU of the bounding-box affine baseline on a gmm batch."""
    cm, parse = _np(b["garment_mask"])[..., 0], b["parse"].numpy()
    warped = np.stack([bbox_affine_warp(m, p) for m, p in zip(cm, parse)])
    return iou(torch.from_numpy(warped > 0.5), b["target_mask"][:, 0] > 0.5).numpy()


def naive_paste(b: dict) -> torch.Tensor:
    """The TOM baseline: the warped garment pasted onto the person where the warped mask > 0.5."""
    m = (b["warped_mask"] > 0.5).float()
    return b["person"] * (1 - m) + b["warped_garment"] * m


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


# ---------------------------------------------------------------------------------------------- evaluation

BARS = {
    "garment_seg": [("iou", "model >= 0.97", lambda m, b: m >= 0.97)],
    "human_parsing": [("miou", "model >= 0.90", lambda m, b: m >= 0.90)],
    "gmm": [("warped_mask_iou", "model >= 0.90 and >= baseline + 0.10", lambda m, b: m >= 0.90 and m >= b + 0.10)],
    "tom": [("ssim", "model >= baseline + 0.05", lambda m, b: m >= b + 0.05)],
    "recolor": [("delta_e2000", "model <= 0.5 x baseline and <= 2.0", lambda m, b: m <= 0.5 * b and m <= 2.0)],
    "onmodel_seg": [("iou", "model >= 0.90", lambda m, b: m >= 0.90)],
}


def _u8(t: torch.Tensor) -> np.ndarray:
    """[3,H,W] float in [0, 1] -> [H,W,3] uint8: what an app sends (the studio's images are 8-bit to begin with)."""
    return np.ascontiguousarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _f(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0).permute(2, 0, 1)


def ensemble_metrics(client, name: str, b: dict) -> dict[str, torch.Tensor]:
    """Score what the served ensemble returns for each item of batch ``b`` (same targets as the network's row).

    tom: ``tryon(person, still)`` -> PSNR and SSIM (whole, swap region, kept region) against the target;
    recolor: ``recolor(on-model photo, still)`` -> per-pixel CIEDE2000 inside the true garment."""
    if name == "tom":
        out = torch.stack([_f(client.tryon(_u8(p), _u8(g))) for p, g in zip(b["person"], b["garment"])])
        m = {"psnr": psnr(out, b["target"]), **tryon_ssim(out, b["target"], b["person"])}
    else:
        out = torch.stack([_f(client.recolor(_u8(o), _u8(s)).image) for o, s in zip(b["on_model"], b["still"])])
        m = {"px_delta_e2000": delta_e2000(out, b["target"])[:, 0][b["garment_mask"][:, 0] > 0.5]}
    return {f"{k}_ensemble": v for k, v in m.items()}


@torch.no_grad()
def evaluate_network(name: str, ckpt: Path, data: str, split: str, batch: int = 8,
                     magnitude: tuple[float, float] = RECOLOR_MAGNITUDE, served_by=None) -> dict:
    """``magnitude`` (recolor): the range the test items' degradations are drawn from (default: documented).
    ``served_by`` (tom, recolor): a `drape_client.DrapeClient` whose ensembles are scored on the same items."""
    obj = load_objective(ckpt)
    ds = NetworkDataset(data, split, name, seed=12345, magnitude=magnitude)
    model, base = {}, {}

    def add(d, k, v):
        d.setdefault(k, []).append(np.asarray(v, dtype=np.float64).ravel())

    prior = parsing_prior(NetworkDataset(data, "train", name)) if name == "human_parsing" else None
    if name == "tom":   # TOM sees what serving gives it: the GMM's warp, not the exact one (so does the paste)
        obj.attach_warper(load_objective(ckpt.parent / "gmm").net)
    for b in DataLoader(ds, batch_size=batch):
        b = obj.with_warps(b)
        for k, v in obj.metrics(b).items():
            add(model, k, v.numpy())
        if served_by is not None and name in ("tom", "recolor"):
            for k, v in ensemble_metrics(served_by, name, b).items():
                add(model, k, v.numpy())
        if name == "garment_seg":
            pred = torch.from_numpy(np.stack([seg_baseline(x) for x in _np(b["image"])]))[:, None]
            for k, v in seg_metrics(pred, b["mask"] > 0.5).items():
                add(base, k, v.numpy())
        elif name == "human_parsing":
            pred = torch.from_numpy(np.broadcast_to(prior, b["parse"].shape).copy())
            ious = [torch.where((b["parse"] == c).any(-1).any(-1), iou(pred == c, b["parse"] == c),
                                torch.tensor(float("nan"))) for c in range(NUM_LABELS)]
            add(base, "miou", np.nanmean(torch.stack(ious, 1).numpy(), 1))
        elif name == "gmm":
            add(base, "warped_mask_iou", bbox_affine_iou(b))
        elif name == "tom":
            for k, v in tryon_ssim(naive_paste(b), b["target"], b["person"]).items():
                add(base, k, v.numpy())
        elif name == "recolor":
            gm, sm = _np(b["garment_mask"])[..., 0] > 0.5, _np(b["still_mask"])[..., 0] > 0.5
            out = np.stack([reinhard(o, m, s, q) for o, m, s, q in zip(_np(b["on_model"]), gm, _np(b["still"]), sm)])
            de = delta_e2000(torch.from_numpy(out).permute(0, 3, 1, 2).float(), b["target"])[:, 0]
            add(base, "px_delta_e2000", de[b["garment_mask"][:, 0] > 0.5].numpy())
            # doing nothing: where the model's error is above this, it makes the photo worse
            de_in = delta_e2000(b["on_model"], b["target"])[:, 0]
            add(model, "delta_e2000_input", de_in[b["garment_mask"][:, 0] > 0.5].numpy())
            # as served: recolor_postprocess keeps the photo where the network would barely change it and
            # falls back to the classical transfer where that fits the still better
            add(model, "px_delta_e2000_served", served_recolor(obj, b)[b["garment_mask"][:, 0] > 0.5].numpy())

    if name == "gmm" and any(p != c for p, c, _ in ds.pairs):
        # What try-on serves: the still of *another* garment on the person (scored against the studio's exact
        # rendering of that garment on them). Paired scores flatter a GMM: the garment-agnostic torso still
        # carries the worn garment's outline, which there is the answer.
        for b in DataLoader(NetworkDataset(data, split, name, seed=12345, pairs="cross"), batch_size=batch):
            for k, v in obj.metrics(b).items():     # warped_mask_iou[_tps] -> warped_mask_iou[_tps]_unpaired
                add(model, k.replace("warped_mask_iou", "warped_mask_iou_unpaired"), v.numpy())
            add(base, "warped_mask_iou_unpaired", bbox_affine_iou(b))

    def summarise(d):
        out = {}
        for k, v in d.items():
            v = np.concatenate(v)
            if k.startswith("px_"):
                n = k[3:]
                out.update({n: float(v.mean()), f"{n}_median": float(np.median(v)),
                            **{f"{n}_p{q}": float(np.percentile(v, q)) for q in (90, 95, 99)}})
            else:
                out[k] = float(np.nanmean(v))
        return out

    out = {"network": name, "split": split, "n": len(ds), "model": summarise(model), "baseline": summarise(base)}
    if name == "recolor":
        out["magnitude"] = list(ds.magnitude)
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


def onmodel_variant(card: ModelCard) -> str:
    m = card.config["model"]
    return ("dual+skip" if m.get("cross_skip") else "dual") if m.get("dual", True) else "single"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over the same images and its 95% percentile interval (resampling images)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n, d.size))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    return {"mean": float(d.mean()), "ci95": [float(lo), float(hi)], "n": int(d.size)}


@torch.no_grad()
def evaluate_onmodel(ckpts: list[Path], parsing: Path | None, data: str, split: str, batch: int = 8) -> list[dict]:
    """All onmodel_seg checkpoints on the same images beside the human_parsing garment labels; see the docstring."""
    runs = []
    for ckpt in ckpts:
        if not (ckpt / "weights.pt").is_file():
            raise FileNotFoundError(f"--onmodel {ckpt}: no weights.pt (train it: training/train_onmodel_seg.py)")
        card = read_card(ckpt)
        runs.append({"ckpt": ckpt, "variant": onmodel_variant(card), "seed": card.train["seed"],
                     "obj": load_objective(ckpt), "per": {}})
    for r in runs:
        r["label"] = f"onmodel_seg {r['variant']} seed {r['seed']}"
        if sum(q["variant"] == r["variant"] and q["seed"] == r["seed"] for q in runs) > 1:
            r["label"] += f" ({r['ckpt']})"
    ds = NetworkDataset(data, split, "onmodel_seg", seed=12345)
    hp = None
    if parsing is not None and (parsing / "weights.pt").is_file():
        hw = read_card(parsing).hw
        if list(hw) == list(ds[0]["on_model"].shape[-2:]):
            hp = load_objective(parsing).net
        else:
            console.print(f"[yellow]{parsing} is trained at {hw[0]}x{hw[1]}, not at the data's "
                          "resolution: no human_parsing baseline[/]")
    groups = ParsingGroups()
    partner = {p: c for p, c, _ in ds.pairs if p != c}      # synthetic pairs: same person, the other garment
    base: dict = {}

    def add(d, k, v):
        d.setdefault(k, []).append(np.asarray(v, dtype=np.float64).ravel())

    for start in range(0, len(ds), batch):
        idx = list(range(start, min(start + batch, len(ds))))
        b = {k: torch.stack([ds[i][k] for i in idx]) for k in ("on_model", "still", "mask")}
        other = [partner.get(ds.ids[i]) for i in idx]
        for r in runs:
            for k, v in r["obj"].metrics(b).items():
                add(r["per"], k, v.numpy())
            if r["obj"].net.dual and all(other):
                swapped = {**b, "still": torch.stack([_img(ds.samples[o]["cloth"]) for o in other])}
                add(r["per"], "iou_other_still", r["obj"].metrics(swapped)["iou"].numpy())
        if hp is not None:
            pred = garment_prob(groups(hp(b["on_model"]))) > 0.5
            for k, v in seg_metrics(pred, b["mask"] > 0.5).items():
                add(base, k, v.numpy())
    base = {k: np.concatenate(v) for k, v in base.items()}
    results = []
    for r in runs:
        per = {k: np.concatenate(v) for k, v in r["per"].items()}
        r["per"] = per
        out = {"network": "onmodel_seg", "label": r["label"], "variant": r["variant"], "seed": r["seed"],
               "checkpoint": str(r["ckpt"]), "split": split, "n": len(ds),
               "model": {k: float(v.mean()) for k, v in per.items()},
               "baseline": {k: float(v.mean()) for k, v in base.items()},
               "baseline_name": f"human_parsing garment labels ({parsing})" if hp is not None else None}
        if base:
            out["vs_baseline_iou"] = paired_bootstrap(per["iou"], base["iou"])
        results.append(out)
    for r, out in zip(runs, results):
        single = next((q for q in runs if q["variant"] == "single" and q["seed"] == r["seed"]), None)
        if r["variant"] != "single" and single is not None:
            diff = paired_bootstrap(r["per"]["iou"], single["per"]["iou"])
            out["vs_single_iou"] = {"single": single["label"], **diff}
            out["vs_single_dice"] = paired_bootstrap(r["per"]["dice"], single["per"]["dice"])
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", default="build/checkpoints")
    ap.add_argument("--data", default="data/synth", help="dataset root (VITON-HD layout)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--networks", nargs="*", default=list(NETWORKS))
    ap.add_argument("--out", default="build/eval/report.json", help="JSON report")
    ap.add_argument("--onmodel", nargs="+", type=Path, help="onmodel_seg checkpoint dirs compared on the same "
                    "images (with --networks onmodel_seg; default: <checkpoints>/onmodel_seg)")
    ap.add_argument("--parsing", type=Path, help="human_parsing checkpoint whose garment labels are the onmodel_seg "
                    "baseline (default: <checkpoints>/human_parsing; skipped if missing)")
    ap.add_argument("--magnitude", nargs="+", type=float, metavar="M", default=list(RECOLOR_MAGNITUDE),
                    help="recolor: the degradation magnitude of the test items, one value or a LOW HIGH range drawn "
                    "uniformly (default: the documented range %(default)s, on which the bar is set; "
                    "`python -m drape_train.data scale` says what a magnitude means in Delta E)")
    ap.add_argument("--served-by", metavar="URL", help="also score the tryon / recolor ensembles of the server at "
                    "URL (e.g. localhost:8001, https://drape.example.com) on the same items: *_ensemble metrics "
                    "(tom and recolor only; the server must be ready)")
    a = ap.parse_args(argv)
    if len(a.magnitude) not in (1, 2):
        ap.error(f"--magnitude takes one value or LOW HIGH, got {len(a.magnitude)} values")
    magnitude = (a.magnitude[0], a.magnitude[-1])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    client = None
    if a.served_by:
        from drape_client import DrapeClient   # torch-free; only needed here
        client = DrapeClient(a.served_by)
        if not client.ready():
            ap.error(f"--served-by {a.served_by}: the server is not ready (are the tryon and recolor ensembles "
                     "loaded? `make serve` starts one)")
    results = []
    for name in a.networks:
        with console.status(f"evaluating {name}"):
            if name == "onmodel_seg":
                results += evaluate_onmodel(a.onmodel or [Path(a.checkpoints) / name],
                                            a.parsing or Path(a.checkpoints) / "human_parsing", a.data, a.split)
            else:
                results.append(evaluate_network(name, Path(a.checkpoints) / name, a.data, a.split,
                                                magnitude=magnitude, served_by=client))
                if name == "recolor" and magnitude != RECOLOR_MAGNITUDE:   # not where the bar is set
                    lo, hi = magnitude
                    results[-1]["label"] = f"recolor @ m {lo:g}" + (f"-{hi:g}" if hi != lo else "") + " (not the bar's)"
    table = Table(title=f"{a.data} / {a.split}: model vs classical baseline")
    for col in ("network", "n", "metric", "model", "baseline", "bar", "pass"):
        table.add_column(col, justify="right" if col in ("n", "model", "baseline") else "left")
    ok = True
    for r in results:
        for metric, bar, check in BARS[r["network"]]:
            m, b = r["model"].get(metric, float("nan")), r["baseline"].get(metric, float("nan"))
            passed = bool(check(m, b))
            ok &= passed
            r.setdefault("bars", {})[metric] = {"bar": bar, "pass": passed}
            table.add_row(r.get("label", r["network"]), str(r["n"]), metric, f"{m:.4f}", f"{b:.4f}", bar,
                          "[green]yes[/]" if passed else "[red]no[/]")
        extra = {k: v for k, v in r["model"].items() if k not in [x[0] for x in BARS[r["network"]]]}
        table.add_row("", "", "[dim]" + ", ".join(
            f"{k}={v:.3f}" + (f" (baseline {r['baseline'][k]:.3f})" if k in r["baseline"] else "")
            for k, v in extra.items()) + "[/]", "", "", "", "")
    console.print(table)
    for r in results:
        for key, what in (("vs_single_iou", "dual - single IoU"), ("vs_baseline_iou", "model - parsing-labels IoU")):
            if key in r:
                c = r[key]
                console.print(f"{r['label']}: {what} {c['mean']:+.4f} (paired bootstrap 95% CI "
                              f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], n={c['n']})")
    seeds = {r["variant"]: [] for r in results if "vs_single_iou" in r}
    for r in results:
        if "vs_single_iou" in r:
            seeds[r["variant"]].append(r["vs_single_iou"]["mean"])
    for variant, diffs in seeds.items():
        if len(diffs) > 1:   # the bootstrap above is test-image noise only; seeds show the training noise
            console.print(f"onmodel_seg {variant} - single IoU over {len(diffs)} seeds: mean {np.mean(diffs):+.4f}, "
                          f"sd {np.std(diffs, ddof=1):.4f}, per seed {', '.join(f'{d:+.4f}' for d in diffs)}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"report: {out}")
    if client is not None:
        client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
