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

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from drape_core.card import ModelCard, read_card
from drape_train.data.layout import RECOLOR_MAGNITUDE
from drape_train.datasets import NetworkDataset, _img
from drape_train.families import FAMILIES, EvalContext
# The classical baselines and the served-answer scoring live in their families; importable from here as before
from drape_train.families.gmm import bbox_affine_iou, bbox_affine_warp, torso_box  # noqa: F401
from drape_train.families.parsing import parsing_prior  # noqa: F401
from drape_train.families.recolor import reinhard, served_recolor  # noqa: F401
from drape_train.families.segmentation import seg_baseline  # noqa: F401
from drape_train.families.tom import _f, _u8, naive_paste  # noqa: F401
from drape_train.models import NETWORKS
from drape_train.models.representation import ParsingGroups, garment_prob
from drape_train.objectives import load_objective, seg_metrics

console = Console(width=None if sys.stdout.isatty() else 150)


# ---------------------------------------------------------------------------------------------- evaluation

BARS = {name: list(f.bars) for name, f in FAMILIES.items()}   # (metric, description, check) per network


@torch.no_grad()
def evaluate_network(name: str, ckpt: Path, data: str, split: str, batch: int = 8,
                     magnitude: tuple[float, float] = RECOLOR_MAGNITUDE, served_by=None) -> dict:
    """``magnitude`` (recolor): the range the test items' degradations are drawn from (default: documented).
    ``served_by`` (tom, recolor): a `drape_client.DrapeClient` whose ensembles are scored on the same items."""
    obj = load_objective(ckpt)
    fam = obj.family
    ds = NetworkDataset(data, split, name, seed=12345, magnitude=magnitude)
    model, base = {}, {}

    def add(d, k, v):
        d.setdefault(k, []).append(np.asarray(v, dtype=np.float64).ravel())

    ctx = EvalContext(obj=obj, ckpt=ckpt, data=data, split=split, batch=batch, load_objective=load_objective,
                      dataset=NetworkDataset, add_model=lambda k, v: add(model, k, v),
                      add_base=lambda k, v: add(base, k, v))
    fam.eval_setup(ctx)   # e.g. TOM sees what serving gives it: the GMM's warp, not the exact one
    for b in DataLoader(ds, batch_size=batch):
        b = obj.with_warps(b)
        for k, v in obj.metrics(b).items():
            add(model, k, v.numpy())
        if served_by is not None and fam.ensemble is not None:
            for k, v in fam.ensemble_metrics(served_by, b).items():
                add(model, f"{k}_ensemble", v.numpy())
        fam.baseline(ctx, b)
    fam.eval_more(ctx, ds)

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

    return {"network": name, "split": split, "n": len(ds), "model": summarise(model), "baseline": summarise(base),
            **fam.report(ds)}


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
            if FAMILIES[name].compares_variants:   # onmodel_seg: its variants side by side on the same images
                results += evaluate_onmodel(a.onmodel or [Path(a.checkpoints) / name],
                                            a.parsing or Path(a.checkpoints) / "human_parsing", a.data, a.split)
            else:
                results.append(evaluate_network(name, Path(a.checkpoints) / name, a.data, a.split,
                                                magnitude=magnitude, served_by=client))
                if "magnitude" in results[-1] and magnitude != RECOLOR_MAGNITUDE:   # not where the bar is set
                    lo, hi = magnitude
                    results[-1]["label"] = f"{name} @ m {lo:g}" + (f"-{hi:g}" if hi != lo else "") + " (not the bar's)"
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
