"""CLI for the procedural try-on data and dataset checks: `python -m drape_train.data --help` (also `drape-data`)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from drape_core.contract import DEFAULT_RESOLUTION

DESCRIPTION = """\
Seeded procedural try-on data in the VITON-HD folder layout.

Each pair is one synthetic person (identity, pose, background, lower body) rendered twice: in garment A
(id k_0) and garment B (id k_1). Besides the VITON-HD files (image, cloth, cloth-mask, image-parse-v3,
openpose_json) every sample has its exact ground truth: gt-warp/<id>.npz holds the dense cloth->person
flow (grid_sample convention) and the visible-garment mask, and image/<k_1> is the true try-on of
(person k_0, cloth k_1). Real VITON-HD data can replace the output folder unchanged.

Garments: t-shirts, long sleeves, tank tops, dresses; solid, stripes, checks, dots or gradient fabric, some
with a chest print (letters, shapes, a badge), soft fold streaks on the body. Backgrounds: flat, gradient,
textured, studio (wall + floor) or cluttered (furniture-like blocks). --recolor also writes every sample as a
recolor item (still, degraded on-model photo, true-colour target, masks, degradation.json).

  generate  render pairs into --out (counts are pairs; 2 images each)
  sheet     contact sheet of a split: person A | still B | parsing A | GT-warped still B | target
            (--recolor: still | degraded on-model | true on-model | garment mask, per recolor item)
  bench     rendering speed of one process (no disk I/O) at 256x192, 512x384 and 1024x768
  scale     what a degradation magnitude means: mean CIEDE2000 per mode and magnitude
  storage   colour error of the JPEG setting the studio writes, beside 4:2:0 and the path real data takes
  validate  check a VITON-HD, item or COCO (Fashionpedia) dataset folder; exit 1 on errors
  samples   a few request-ready images (person, garment, on-model, still) for trying a running server
"""


def _generate(args) -> int:
    from .layout import write_dataset

    counts = {"train": args.train, "val": args.val, "test": args.test}
    t0 = time.perf_counter()
    info = write_dataset(args.out, counts, seed=args.seed, height=args.height, width=args.width,
                         workers=args.workers, progress=not args.quiet, recolor=args.recolor,
                         magnitude=tuple(args.magnitude))
    n = sum(info["samples"].values())
    dt = time.perf_counter() - t0
    extra = f" + {n} recolor items in {Path(args.out) / 'recolor'}" if args.recolor else ""
    print(f"wrote {n} samples ({sum(counts.values())} pairs){extra} to {args.out} in {dt:.1f}s "
          f"({n / max(dt, 1e-9):.1f}/s)")
    return 0


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    scale = max(out.shape[0] / 512, 0.35)
    cv2.putText(out, text, (4, int(14 * scale / 0.35 * 0.8)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                cv2.LINE_AA)
    cv2.putText(out, text, (4, int(14 * scale / 0.35 * 0.8)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def contact_sheet(root, split: str, n: int, tile_height: int = 256) -> np.ndarray:
    """Rows of (person A, still B, parsing A, still B warped by B's GT flow, GT target) as one RGB image."""
    from .layout import VitonDataset
    from .synth import colorize_parse, warp_cloth

    ds = VitonDataset(root, split)
    rows = []
    for person, cloth in ds.pairs:
        if len(rows) == n:
            break
        target = ds.target_for(person, cloth)
        a, b = ds.load(person), ds.load(cloth)
        blank = np.full_like(a["image"], 127)
        if target is not None and "flow" in b:
            warped = warp_cloth(b["cloth"], b["flow"])
            warped[b["garment_mask"] == 0] = 127
            tgt = ds.load(target)["image"]
        else:
            warped, tgt = blank, blank
        tiles = [a["image"], b["cloth"], colorize_parse(a["parse"]), warped, tgt]
        names = [f"person {person}", f"still {cloth}", "parsing", "GT warp", f"target {target or '-'}"]
        h, w = a["image"].shape[:2]
        size = (round(w * tile_height / h), tile_height)
        tiles = [_label(cv2.resize(t, size, interpolation=cv2.INTER_AREA), s) for t, s in zip(tiles, names)]
        rows.append(np.concatenate(tiles, 1))
    if not rows:
        raise SystemExit(f"no pairs in {root}/{split}_pairs.txt")
    return np.concatenate(rows, 0)


def recolor_sheet(root, split: str, n: int, tile_height: int = 256) -> np.ndarray:
    """Rows of (still, degraded on-model, true on-model, garment mask) for the recolor items of a split."""
    from .readers import ItemDataset

    ds = ItemDataset(Path(root) / "recolor", split)
    rows = []
    for name in ds.items[:n]:
        it = ds.load(name)
        deg = it["degradation"] or {}
        truth = it["on_model_true"] if it["on_model_true"] is not None else np.full_like(it["on_model"], 127)
        mask = it["mask_on_model"] if it["mask_on_model"] is not None else np.zeros(it["on_model"].shape[:2], np.uint8)
        tiles = [it["still"], it["on_model"], truth, np.repeat(mask[..., None], 3, 2)]
        de = deg.get("delta_e00", {}).get("mean", float("nan"))
        names = [f"still {name[5:]}", f"{deg.get('mode', '?')} m={deg.get('magnitude', 0):.2f}",
                 f"true (dE00 {de:.1f})", "garment mask"]
        h, w = it["on_model"].shape[:2]
        size = (round(w * tile_height / h), tile_height)
        rows.append(np.concatenate([_label(cv2.resize(t, size, interpolation=cv2.INTER_AREA), s)
                                    for t, s in zip(tiles, names)], 1))
    return np.concatenate(rows, 0)


def _sheet(args) -> int:
    make = recolor_sheet if args.recolor else contact_sheet
    sheet = make(args.root, args.split, args.n, args.tile_height)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet[..., ::-1])
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 256x192, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (16 px a side at least)")
    return h, w


def bench(sizes, n: int, seconds: float | None = None) -> list[dict]:
    """Render pairs at each size in this process; n pairs at 256x192, fewer (by area, at least 4) above it."""
    from .synth import render_pair

    rows = []
    for h, w in sizes:
        count = max(4, round(n * 256 * 192 / (h * w)))
        render_pair(0, h, w)  # warm the caches
        t0 = time.perf_counter()
        for k in range(count):
            render_pair(1000 + k, h, w)
        dt = time.perf_counter() - t0
        rows.append({"size": f"{h}x{w}", "pairs": count, "samples_per_s": 2 * count / dt,
                     "ms_per_pair": 1000 * dt / count})
    return rows


def _bench(args) -> int:
    from rich.console import Console
    from rich.table import Table

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = bench(args.sizes, args.n)
    table = Table(title=f"render_pair, 1 process, no disk I/O (load average {load:.2f} on {os.cpu_count()} CPUs)")
    for col in ("size", "pairs", "samples/s", "ms per pair"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["size"], str(r["pairs"]), f"{r['samples_per_s']:.1f}", f"{r['ms_per_pair']:.1f}")
    Console().print(table)
    return 0


def _scale(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .degrade import MODES, measure_scale

    res = measure_scale(tuple(args.magnitudes), args.n, args.seed)
    table = Table(title=f"mean CIEDE2000 inside the garment ({args.n} synthetic on-model images per cell)")
    table.add_column("mode")
    for m in args.magnitudes:
        table.add_column(f"m={m:g}", justify="right")
    for mode in MODES:
        table.add_row(mode, *(f"{res[mode][float(m)]:.1f}" for m in args.magnitudes))
    Console().print(table)
    return 0


def _storage(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .layout import measure_storage

    res = measure_storage(args.n, args.seed, args.height, args.width, args.large)
    table = Table(title=f"mean CIEDE2000 inside the garment, read back at {args.height}x{args.width} against the "
                        f"raw render ({2 * args.n} images)")
    table.add_column("storage")
    table.add_column("Delta E 2000", justify="right")
    for name, v in res.items():
        table.add_row(name, f"{v:.2f}")
    Console().print(table)
    return 0


def _validate(args) -> int:
    from .validate import print_report, validate

    rep = validate(args.layout, args.root, args.annotations, args.split, progress=not args.quiet)
    print_report(rep, max_rows=args.max_rows)
    return 0 if rep.ok else 1


def _samples(args) -> int:
    """Photos an app would send: a person and another garment's still (tryon), an on-model photo and its still."""
    from .synth import render_pair

    a, b = render_pair(args.seed, args.height, args.width)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"person.jpg": a.image, "garment.jpg": b.cloth, "on_model.jpg": b.image, "still.jpg": a.cloth}
    for name, rgb in files.items():
        cv2.imwrite(str(out / name), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    print(f"wrote {', '.join(files)} to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m drape_train.data", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = argparse.ArgumentDefaultsHelpFormatter

    g = sub.add_parser("generate", help="render a synthetic dataset", formatter_class=d,
                       description="Render pairs into the VITON-HD layout. Output depends only on --seed, the "
                                   "resolution and the counts (never on --workers).")
    g.add_argument("--out", default="data/synth", help="dataset root")
    g.add_argument("--train", type=int, default=256, help="training pairs")
    g.add_argument("--val", type=int, default=32, help="validation pairs")
    g.add_argument("--test", type=int, default=32, help="test pairs")
    g.add_argument("--seed", type=int, default=0, help="base seed; splits and pairs get disjoint derived seeds")
    g.add_argument("--height", type=int, default=DEFAULT_RESOLUTION[0], help="image height (VITON-HD: 1024)")
    g.add_argument("--width", type=int, default=DEFAULT_RESOLUTION[1], help="image width (VITON-HD: 768)")
    g.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="rendering processes")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--recolor", action="store_true",
                   help="also write every sample as a recolor item under <out>/recolor/<split>/item_<id>/ (still, "
                        "degraded on_model, on_model_true, masks, degradation.json)")
    g.add_argument("--magnitude", type=float, nargs=2, default=[0.05, 0.35], metavar=("LOW", "HIGH"),
                   help="recolor items: degradation magnitude drawn uniformly in [LOW, HIGH] (see `scale` for what "
                        "a magnitude means in Delta E 2000)")
    g.set_defaults(func=_generate)

    s = sub.add_parser("sheet", help="write a contact sheet PNG of a split", formatter_class=d,
                       description="One row per pair: person A, still B, parsing A, still B warped by its GT "
                                   "flow, and the GT try-on target (person A wearing B).")
    s.add_argument("--root", default="data/synth", help="dataset root")
    s.add_argument("--split", default="val", choices=("train", "val", "test"))
    s.add_argument("--n", type=int, default=8, help="rows (pairs)")
    s.add_argument("--tile-height", type=int, default=256, help="height of each tile in pixels")
    s.add_argument("--out", default="build/contact_sheet.png", help="output PNG")
    s.add_argument("--recolor", action="store_true",
                   help="draw the recolor items of the split instead (needs a set generated with --recolor)")
    s.set_defaults(func=_sheet)

    b = sub.add_parser("bench", help="measure rendering speed", formatter_class=d,
                       description="Render pairs in this process at each size and report samples per second (one "
                                   "run, so numbers are comparable; check the load average in the title).")
    b.add_argument("--n", type=int, default=60, help="pairs at 256x192; larger sizes render fewer, by area")
    b.add_argument("--sizes", type=_parse_size, nargs="+", default=[(256, 192), (512, 384), (1024, 768)],
                   metavar="HxW", help="resolutions to measure")
    b.set_defaults(func=_bench)

    c = sub.add_parser("scale", help="Delta E 2000 of each degradation mode per magnitude", formatter_class=d,
                       description="Degrade the garment of --n synthetic on-model images with every mode at each "
                                   "magnitude and print the mean CIEDE2000 inside the garment: the meaning of "
                                   "--magnitude in colour-difference units (~1 is a just-noticeable difference).")
    c.add_argument("--magnitudes", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.35, 0.5, 1.0])
    c.add_argument("--n", type=int, default=32, help="images per cell")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_scale)

    o = sub.add_parser("storage", help="colour error of the studio's JPEG setting", formatter_class=d,
                       description="Render --n pairs at --large times the size, and read each back at HxW the "
                                   "ways a loader can get it: stored at HxW with the studio's JPEG setting (quality "
                                   "98, no chroma subsampling) and with quality 95 at 4:2:0 / 4:4:4, or stored "
                                   "large at 4:2:0 and resized down (how real VITON-HD photos reach 256x192). "
                                   "Prints the mean CIEDE2000 inside the garment against the raw render.")
    o.add_argument("--n", type=int, default=32, help="pairs (2 images each)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--height", type=int, default=DEFAULT_RESOLUTION[0])
    o.add_argument("--width", type=int, default=DEFAULT_RESOLUTION[1])
    o.add_argument("--large", type=int, default=4, help="the real-data path renders this many times larger")
    o.set_defaults(func=_storage)

    v = sub.add_parser("validate", help="check a dataset folder (VITON-HD, items, COCO)", formatter_class=d,
                       description="Report missing or mismatched files, size and label anomalies (parse map size "
                                   "!= image size, labels outside LIP 0..19, empty masks, undecodable files) and "
                                   "counts as tables. Exit status 1 when there is any error, 0 otherwise "
                                   "(warnings do not fail).")
    v.add_argument("--layout", required=True, choices=("viton", "items", "coco"),
                   help="viton: <root>/<split>/{image,cloth,cloth-mask,image-parse-v3,openpose_json} + "
                        "<split>_pairs.txt; items: <root>/<split>/item_*/{still.jpg,mask_still.png,on_model.jpg,"
                        "mask_on_model.png} (masks optional in split 'test'); coco: an image folder + instances json")
    v.add_argument("--root", required=True, help="dataset root (coco: the image folder)")
    v.add_argument("--annotations", help="coco: the instances json; None = the only .json file in --root")
    v.add_argument("--split", nargs="+", choices=("train", "val", "test"),
                   help="viton: splits to check; None = every split with an image/ folder")
    v.add_argument("--max-rows", type=int, default=50, help="issues listed in the table")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_validate)

    m = sub.add_parser("samples", help="write sample request images", formatter_class=d,
                       description="person.jpg + garment.jpg (a try-on pair), on_model.jpg + still.jpg (a recolor "
                                   "pair whose still shows a different garment colour).")
    m.add_argument("--out", default="build/samples")
    m.add_argument("--seed", type=int, default=20261123, help="scene seed (not in any generated split)")
    m.add_argument("--height", type=int, default=512)
    m.add_argument("--width", type=int, default=384)
    m.set_defaults(func=_samples)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "magnitude", None) is not None:   # generate: say so before writing anything
        from .layout import magnitude_range
        try:
            magnitude_range(args.magnitude)
        except ValueError as e:
            parser.error(f"--magnitude: {e}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
