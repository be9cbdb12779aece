"""CLI for the procedural try-on data: `python -m drape_train.data {generate,sheet}` (also `drape-data`)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

DESCRIPTION = """\
Seeded procedural try-on data in the VITON-HD folder layout.

Each pair is one synthetic person (identity, pose, background, lower body) rendered twice: in garment A
(id k_0) and garment B (id k_1). Besides the VITON-HD files (image, cloth, cloth-mask, image-parse-v3,
openpose_json) every sample has its exact ground truth: gt-warp/<id>.npz holds the dense cloth->person
flow (grid_sample convention) and the visible-garment mask, and image/<k_1> is the true try-on of
(person k_0, cloth k_1). Real VITON-HD data can replace the output folder unchanged.

  generate  render pairs into --out (counts are pairs; 2 images each)
  sheet     contact sheet of a split: person A | still B | parsing A | GT-warped still B | target
  bench     rendering speed of one process (no disk I/O)
  samples   a few request-ready images (person, garment, on-model, still) for trying a running server
"""


def _generate(args) -> int:
    from .layout import write_dataset

    counts = {"train": args.train, "val": args.val, "test": args.test}
    t0 = time.perf_counter()
    info = write_dataset(args.out, counts, seed=args.seed, height=args.height, width=args.width,
                         workers=args.workers, progress=not args.quiet)
    n = sum(info["samples"].values())
    dt = time.perf_counter() - t0
    print(f"wrote {n} samples ({sum(counts.values())} pairs) to {args.out} in {dt:.1f}s ({n / max(dt, 1e-9):.1f}/s)")
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


def _sheet(args) -> int:
    sheet = contact_sheet(args.root, args.split, args.n, args.tile_height)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet[..., ::-1])
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def _bench(args) -> int:
    from .synth import render_pair

    render_pair(0, args.height, args.width)  # warm the caches
    t0 = time.perf_counter()
    for k in range(args.n):
        render_pair(1000 + k, args.height, args.width)
    dt = time.perf_counter() - t0
    print(f"{args.height}x{args.width}: {2 * args.n / dt:.1f} samples/s ({1000 * dt / args.n:.1f} ms per pair, "
          f"1 process)")
    return 0


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
    g.add_argument("--height", type=int, default=256, help="image height (VITON-HD: 1024)")
    g.add_argument("--width", type=int, default=192, help="image width (VITON-HD: 768)")
    g.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="rendering processes")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_generate)

    s = sub.add_parser("sheet", help="write a contact sheet PNG of a split", formatter_class=d,
                       description="One row per pair: person A, still B, parsing A, still B warped by its GT "
                                   "flow, and the GT try-on target (person A wearing B).")
    s.add_argument("--root", default="data/synth", help="dataset root")
    s.add_argument("--split", default="val", choices=("train", "val", "test"))
    s.add_argument("--n", type=int, default=8, help="rows (pairs)")
    s.add_argument("--tile-height", type=int, default=256, help="height of each tile in pixels")
    s.add_argument("--out", default="build/contact_sheet.png", help="output PNG")
    s.set_defaults(func=_sheet)

    b = sub.add_parser("bench", help="measure rendering speed", formatter_class=d,
                       description="Render --n pairs in this process and report samples per second.")
    b.add_argument("--n", type=int, default=50, help="pairs to render")
    b.add_argument("--height", type=int, default=256)
    b.add_argument("--width", type=int, default=192)
    b.set_defaults(func=_bench)

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
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
