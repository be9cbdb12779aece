"""Where does recolor's error come from? Oracle and classical probes beside the trained model.

    python -m drape_train.recolor_bound --data data/synth --split test \\
        --checkpoint build/default/checkpoints/recolor --gmm build/default/checkpoints/gmm

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
* correspondence-quality rows: the same shaded fit with the pairs pooled to 1/8-resolution cells (what an in-graph
  solve on the network's feature grid would see) and a level that needs no oracle (the brightest 5% of the garment
  taken as unshaded), for several sources of pairs: the exact warp, the same off by 2, 4 and 8 pixels (how precise
  the pairs must be), cells matched by their place inside each garment (position relative to each mask's centroid
  and spread, a Gaussian kernel), and with --gmm the try-on GMM warping the still onto the photo (what a served
  recolor could compute).
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

from drape_core.colour import delta_e_2000, lab_to_rgb, rgb_to_lab
from drape_train.datasets import NetworkDataset, warp_with_flow
from drape_train.evaluate import evaluate_network, load_objective, reinhard
from drape_train.models.recolor import moment_match
from drape_train.models.representation import labels_to_logits, mask_to_logits


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
        out = fn(rgb_to_lab(x), rgb_to_lab(ref))
        return lab_to_rgb(out)
    return wrapped


GAUSSIAN_OT = {"Gaussian OT RGB": gaussian_ot, "Gaussian OT Lab": _in_lab(gaussian_ot)}


def _de(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta = rgb_to_lab(torch.from_numpy(np.clip(a, 0, 1)).float())
    tb = rgb_to_lab(torch.from_numpy(np.asarray(b)).float())
    return delta_e_2000(ta, tb).numpy()


LUM = np.array([0.2126, 0.7152, 0.0722])


def _cells(img: np.ndarray, w: np.ndarray, f: int = 8):
    """Mask-weighted mean colour [N,3], weight [N] and centre (y, x) [N,2] of f x f cells."""
    h, wd = (s // f * f for s in w.shape)
    img, w = img[:h, :wd] * w[:h, :wd, None], w[:h, :wd].reshape(h // f, f, wd // f, f).mean((1, 3))
    c = img.reshape(h // f, f, wd // f, f, 3).mean((1, 3)) / (w[..., None] + 1e-4)
    yy, xx = np.meshgrid(np.arange(h // f) + 0.5, np.arange(wd // f) + 0.5, indexing="ij")
    return c.reshape(-1, 3), w.reshape(-1), np.stack([yy.ravel(), xx.ravel()], 1)


def shaded_cell_fit(x_px: np.ndarray, x_cells: np.ndarray, matched: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The affine map from the photo's cells to the matched still colour times the photo's shading, fitted with
    the cells' mask shares as weights and applied to the photo's pixels. The shading is the cell's luminance over
    the matched still colour's, its level set so that the brightest 5% of the garment are unshaded (no oracle)."""
    shade = (x_cells @ LUM) / np.maximum(matched @ LUM, 0.02)
    keep = w > 0.2 if (w > 0.2).sum() > 3 else w > 0
    shade = np.clip(shade / max(np.percentile(shade[keep], 95), 1e-3), 0.0, 1.5)
    t = _terms(x_cells, 1) * w[:, None]
    a = t.T @ _terms(x_cells, 1) + 1e-3 * np.eye(4)
    b = t.T @ (matched * shade[:, None]) + 1e-3 * np.vstack([np.zeros(3), np.eye(3)])   # ridge towards identity
    return np.clip(_terms(x_px, 1) @ np.linalg.solve(a, b), 0.0, 1.0)


def _normalised_places(centres: np.ndarray, w: np.ndarray) -> np.ndarray:
    mu = (centres * w[:, None]).sum(0) / w.sum()
    sd = np.sqrt((((centres - mu) ** 2) * w[:, None]).sum(0) / w.sum())
    return (centres - mu) / np.maximum(sd, 1e-6)


def probe(data: str, split: str, checkpoint: Path | None = None, stride: int = 1,
          gmm: Path | None = None) -> dict[str, dict]:
    """Row name -> {mean, median_image, p95_image, over5, n} over the split (every `stride`-th image)."""
    ds = NetworkDataset(data, split, "recolor", seed=12345)     # the items `evaluate` scores
    obj = gmm_net = None
    if checkpoint is not None:
        obj = load_objective(Path(checkpoint))
        obj.net.eval()
    if gmm is not None:
        gmm_net = load_objective(Path(gmm)).net.eval()
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
            seen_lum = np.maximum(seen @ LUM, 0.02)
            shade_true = (y @ LUM) / seen_lum
            shade_photo = (x @ LUM) / seen_lum
            shade_photo *= np.median(shade_true) / max(np.median(shade_photo), 1e-6)
            rows["same, to still x true shading (oracle)"] = oracle_fit(x, seen * shade_true[:, None], 1)
            rows["same, to still x shading from the photo"] = oracle_fit(x, seen * shade_photo[:, None], 1)
            gm = item["garment_mask"][0].numpy()
            xc, wc, centres = _cells(on_model, gm)
            seen_img = warp_with_flow(sample["cloth"], sample["flow"]).astype(np.float64) / 255.0
            rows["cells 1/8, exact correspondences, shading from the photo"] = \
                shaded_cell_fit(x, xc, _cells(seen_img, gm)[0], wc)
            for px in (2, 4, 8):   # how precise must the pairs be? the same, every pair off by px pixels
                both = gm * np.roll(gm, (px, px), (0, 1))                 # inside both garments, as the GMM row
                xs, wsh, _ = _cells(on_model, both)
                rows[f"cells 1/8, exact correspondences off by {px} px"] = \
                    shaded_cell_fit(x, xs, _cells(np.roll(seen_img, (px, px), (0, 1)), both)[0], wsh)
            sc, ws, still_centres = _cells(still, item["still_mask"][0].numpy())
            d2 = ((_normalised_places(centres, wc)[:, None] - _normalised_places(still_centres, ws)[None]) ** 2).sum(-1)
            kernel = np.exp(-d2 / (2 * 0.3 ** 2)) * ws[None]
            rows["cells 1/8, matched by place in the garment"] = \
                shaded_cell_fit(x, xc, kernel @ sc / (kernel.sum(1, keepdims=True) + 1e-9), wc)
            if gmm_net is not None:
                with torch.no_grad():
                    warped, wmask = gmm_net(labels_to_logits(item["parse"][None]), item["still"][None],
                                            mask_to_logits(item["still_mask"][None]))
                both = gm * wmask[0, 0].numpy()
                xg, wg, _ = _cells(on_model, both)
                rows["cells 1/8, correspondences from the GMM warp"] = \
                    shaded_cell_fit(x, xg, _cells(warped[0].permute(1, 2, 0).numpy().astype(np.float64), both)[0], wg)
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
    ap.add_argument("--gmm", type=Path, help="a trained GMM checkpoint folder (adds the GMM-warp correspondence row)")
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
    rows = probe(args.data, args.split, args.checkpoint, args.stride, args.gmm)
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
