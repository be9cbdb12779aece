"""Where does recolor's error come from? Oracle and classical probes beside the trained model.

    python -m drape_train.recolor_bound --data data/synth --split test \\
        --checkpoint build/default/checkpoints/recolor

Every row is the mean CIEDE2000 inside the garment over the split's pixels (as `evaluate` reports it), the median
and p95 of the per-image means, and how many images average above 5. The test items are the ones `evaluate`
scores (same seed, so the same degradation per image).

* oracle rows fit one colour function per image *on the target* (least squares, degraded -> true pixels, over
  the garment): the best any global colour function could do. If they are far below the model, the form of the
  function is not what limits it; estimating it from the still is.
* classical rows estimate the function from the still alone: per-channel moments in RGB (the network's base,
  `models.recolor.moment_match`), Reinhard's Lab transfer (`evaluate.reinhard`, the baseline), and the Gaussian optimal-transport map between the two
  garments' colour distributions (Monge-Kantorovich linear) in RGB and in Lab.
* correspondence rows (synthetic studio: the exact warp says which still pixel each garment pixel shows):
  the still's colour at that point as it is, and the affine map fitted from the degraded pixels to those
  colours (least squares over the garment), applied to the degraded pixels. This is what a colour-map solve on
  perfect correspondences can reach: the still is unshaded, so what it cannot give is the photo's shading.
  Two more rows fit the map to the still's colour times a per-pixel shading: the true one (target luminance /
  still luminance, an oracle) and one read off the degraded photo (its luminance / the still's, scaled so its
  median is the true one's: the shape from the photo, the level from the oracle).
* with --checkpoint: the model, and the model after the oracle quadratic fit on *its output*: what remains once
  every global colour error is removed, i.e. its local (per-pixel) error.

`--sweep 0 0.02 0.05 0.1 0.2 0.35` (with --checkpoint) instead degrades every item at one magnitude at a time and
prints the input (doing nothing), Reinhard and the model side by side: how the error grows with the cast, and
what the model does to a photo that was already right (magnitude 0).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.color import lab2rgb, rgb2lab

from drape_train.color import delta_e_2000, rgb_to_lab
from drape_train.datasets import NetworkDataset, warp_with_flow
from drape_train.evaluate import evaluate_network, load_objective, reinhard
from drape_train.models.recolor import moment_match


def _terms(x: np.ndarray, degree: int) -> np.ndarray:
    r, g, b = x.T
    t = [np.ones_like(r), r, g, b]
    if degree >= 2:
        t += [r * r, g * g, b * b, r * g, r * b, g * b]
    return np.stack(t, 1)


def oracle_fit(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """x [N,3] -> the least-squares polynomial (affine: 1, quadratic: 2) of x that best predicts y, applied to x."""
    t = _terms(x.astype(np.float64), degree)
    coef, *_ = np.linalg.lstsq(t, y.astype(np.float64), rcond=None)
    return np.clip(t @ coef, 0.0, 1.0)


def _sqrtm(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 1e-10, None))) @ v.T


def gaussian_ot(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The linear Monge-Kantorovich map N(mu_x, S_x) -> N(mu_ref, S_ref) applied to x (Pitie & Kokaram 2007)."""
    sx = np.cov(x.T) + 1e-6 * np.eye(3)
    sr = np.cov(ref.T) + 1e-6 * np.eye(3)
    half = _sqrtm(sx)
    inv = np.linalg.inv(half)
    t = inv @ _sqrtm(half @ sr @ half) @ inv
    return (x - x.mean(0)) @ t.T + ref.mean(0)


def _in_lab(fn):
    def wrapped(x, ref):
        out = fn(rgb2lab(x[None])[0], rgb2lab(ref[None])[0])
        return lab2rgb(out[None])[0]
    return wrapped


GAUSSIAN_OT = {"Gaussian OT RGB": gaussian_ot, "Gaussian OT Lab": _in_lab(gaussian_ot)}


def _de(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta = rgb_to_lab(torch.from_numpy(np.clip(a, 0, 1)).float())
    tb = rgb_to_lab(torch.from_numpy(np.asarray(b)).float())
    return delta_e_2000(ta, tb).numpy()


def probe(data: str, split: str, checkpoint: Path | None = None, stride: int = 1) -> dict[str, dict]:
    """Row name -> {mean, median_image, p95_image, over5, n} over the split (every `stride`-th image)."""
    ds = NetworkDataset(data, split, "recolor", seed=12345)     # the items `evaluate` scores
    obj = None
    if checkpoint is not None:
        obj = load_objective(Path(checkpoint))
        obj.net.eval()
    per_px: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(ds), stride):
        item = ds[i]
        m = item["garment_mask"][0].numpy() > 0.5
        sm = item["still_mask"][0].numpy() > 0.5
        if m.sum() < 4 or sm.sum() < 4:
            continue
        on_model, still, target = (item[k].permute(1, 2, 0).numpy() for k in ("on_model", "still", "target"))
        x, y, s = on_model[m].astype(np.float64), target[m], still[sm].astype(np.float64)
        rows = {"input (degraded)": x,
                "oracle affine fit on the target": oracle_fit(x, y, 1),
                "oracle quadratic fit on the target": oracle_fit(x, y, 2)}
        base = moment_match(item["on_model"][None], item["garment_mask"][None], item["still"][None],
                            item["still_mask"][None])
        rows["moments RGB (the network's base)"] = base[0].permute(1, 2, 0).numpy()[m]
        rows["Reinhard Lab (evaluate baseline)"] = reinhard(on_model, m, still, sm)[m]
        rows.update({name: fn(x, s) for name, fn in GAUSSIAN_OT.items()})
        sample = ds.samples[ds.ids[i]]
        if "flow" in sample:          # exact correspondences: the still's colour where the warp samples it
            seen = warp_with_flow(sample["cloth"], sample["flow"])[m].astype(np.float64) / 255.0
            rows["still colour at the exact correspondence"] = seen
            rows["affine fit to the still at exact correspondences"] = oracle_fit(x, seen, 1)
            lum = np.array([0.2126, 0.7152, 0.0722])
            seen_lum = np.maximum(seen @ lum, 0.02)
            shade_true = (y @ lum) / seen_lum
            shade_photo = (x @ lum) / seen_lum
            shade_photo *= np.median(shade_true) / max(np.median(shade_photo), 1e-6)
            rows["same, to still x true shading (oracle)"] = oracle_fit(x, seen * shade_true[:, None], 1)
            rows["same, to still x shading from the photo"] = oracle_fit(x, seen * shade_photo[:, None], 1)
        if obj is not None:
            with torch.no_grad():
                out, _ = obj.net(*obj.inputs({k: v[None] for k, v in item.items()}))
            o = out[0].permute(1, 2, 0).numpy()[m].astype(np.float64)
            rows["model"] = o
            rows["model + oracle quadratic fix (its local error)"] = oracle_fit(o, y, 2)
        for name, pred in rows.items():
            per_px.setdefault(name, []).append(_de(pred, y))
    out = {}
    for name, per_image in per_px.items():
        means = np.array([v.mean() for v in per_image])
        out[name] = {"mean": float(np.concatenate(per_image).mean()), "median_image": float(np.median(means)),
                     "p95_image": float(np.percentile(means, 95)), "over5": int((means > 5).sum()),
                     "n": len(means)}
    return out


def sweep(data: str, split: str, checkpoint: Path, magnitudes) -> list[dict]:
    """Input, Reinhard and model mean CIEDE2000 inside the garment with every item degraded at one magnitude.

    `evaluate`'s recolor row (same items and draws, seed 12345) at each magnitude: the bar is set on the documented
    range, this shows how the error grows with the cast (0 = the photo was already right). "served": what the
    ensemble returns, the photo as it is where the network would barely change it (`evaluate.served_recolor`).
    """
    rows = []
    for mag in magnitudes:
        e = evaluate_network("recolor", Path(checkpoint), data, split, magnitude=(mag, mag))
        r = {"magnitude": float(mag), "n": e["n"], "input": e["model"]["delta_e2000_input"],
             "reinhard": e["baseline"]["delta_e2000"], "model": e["model"]["delta_e2000"],
             "served": e["model"]["delta_e2000_served"]}
        r["ratio"] = r["model"] / r["reinhard"]
        r["bars"] = bool(r["ratio"] <= 0.5 and r["model"] <= 2.0)
        rows.append(r)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drape_train.recolor_bound", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth", help="dataset root (default: %(default)s)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", type=Path, help="a trained recolor checkpoint folder (adds the model rows)")
    ap.add_argument("--stride", type=int, default=1, help="every n-th image (default: %(default)s)")
    ap.add_argument("--sweep", nargs="+", type=float, metavar="M",
                    help="instead of the probes: input / Reinhard / model error with every item degraded at each "
                    "magnitude M (needs --checkpoint), e.g. --sweep 0 0.02 0.05 0.1 0.2 0.35")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    if args.sweep:
        if args.checkpoint is None:
            ap.error("--sweep needs --checkpoint")
        table = Table(title=f"recolor: mean CIEDE2000 inside the garment by degradation magnitude, {args.split} split")
        for col in ("magnitude", "input", "Reinhard", "model", "model / Reinhard", "<= 0.5x and <= 2.0",
                    "as served (gate)"):
            table.add_column(col, justify="right")
        for r in sweep(args.data, args.split, args.checkpoint, args.sweep):
            table.add_row(f"{r['magnitude']:g}", f"{r['input']:.2f}", f"{r['reinhard']:.2f}", f"{r['model']:.2f}",
                          f"{r['ratio']:.2f}", "yes" if r["bars"] else "no", f"{r['served']:.2f}")
        Console(width=120).print(table)
        return 0
    rows = probe(args.data, args.split, args.checkpoint, args.stride)
    n = next(iter(rows.values()))["n"]
    table = Table(title=f"recolor: mean CIEDE2000 inside the garment, {args.split} split, {n} images")
    for col in ("estimate", "mean (pixels)", "median image", "p95 image", "images > 5"):
        table.add_column(col, justify="left" if col == "estimate" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r['mean']:.2f}", f"{r['median_image']:.2f}", f"{r['p95_image']:.2f}", str(r["over5"]))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
