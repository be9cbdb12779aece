"""Look at try-on checkpoints side by side: one row per test pair, the served chain of each checkpoint folder.

    python -m drape_train.tryon_sheet --checkpoints build/default/checkpoints build/exp/tom_same \\
        --data data/synth --split test --rows 6 --out build/tryon_sheet.jpg

Columns: the person photo, the target (that person wearing the other garment: the synthetic studio's exact
rendering), then for every --checkpoints folder (each with gmm/ and tom/) the naive paste of the garment as its
GMM warps it and what the try-on ensemble returns (TOM inside the feathered edit mask, the photo outside). The
numbers `evaluate` prints for TOM are over these same pairs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from drape_train.datasets import NetworkDataset
from drape_train.evaluate import load_objective, naive_paste
from drape_train.objectives import served_tryon


def load_chain(folder: Path):
    """The tom objective of `folder`, fed by the gmm of the same folder (as `evaluate` and serving do)."""
    for name in ("gmm", "tom"):
        if not (folder / name / "weights.pt").is_file():
            raise FileNotFoundError(f"--checkpoints {folder}: no {name}/weights.pt (train gmm and tom into it)")
    obj = load_objective(folder / "tom")
    obj.attach_warper(load_objective(folder / "gmm").net)
    obj.net.eval()
    return obj


@torch.no_grad()
def sheet(folders: list[Path], data: str, split: str, rows: int, stride: int = 2) -> np.ndarray:
    """uint8 [rows*H, (2 + 2*len(folders))*W, 3]: person, target, then paste and served try-on per folder."""
    ds = NetworkDataset(data, split, "tom", seed=12345)
    idx = list(range(0, len(ds), stride))[:rows]
    b = {k: torch.stack([ds[i][k] for i in idx]) for k in ds[0]}
    cols = [b["person"], b["target"]]
    for folder in folders:
        obj = load_chain(folder)
        w = obj.with_warps(b)
        tryon, edit = obj.net(*obj.inputs(w))
        cols += [naive_paste(w), served_tryon(tryon, edit, b["person"])]
    grid = torch.cat([torch.cat(cols, 3)[i] for i in range(len(idx))], 1)      # [3, rows*H, cols*W]
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drape_train.tryon_sheet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, nargs="+", required=True,
                    help="checkpoint folders, each holding gmm/ and tom/ (one pair of columns each)")
    ap.add_argument("--data", default="data/synth", help="dataset root (default: %(default)s)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rows", type=int, default=6, help="test pairs to draw (default: %(default)s)")
    ap.add_argument("--stride", type=int, default=2, help="every n-th pair (default: %(default)s: one per person)")
    ap.add_argument("--out", type=Path, default=Path("build/tryon_sheet.jpg"))
    args = ap.parse_args(argv)
    img = sheet(args.checkpoints, args.data, args.split, args.rows, args.stride)
    w = img.shape[1] // (2 + 2 * len(args.checkpoints))
    head = Image.new("RGB", (img.shape[1], 14), "white")
    draw = ImageDraw.Draw(head)
    names = ["person", "target"] + [f"{s} {f.name if f.name != 'checkpoints' else f.parent.name}"
                                    for f in args.checkpoints for s in ("paste", "served")]
    for i, name in enumerate(names):
        draw.text((i * w + 2, 1), name[: w // 6], fill="black")
    out = Image.new("RGB", (img.shape[1], img.shape[0] + 14), "white")
    out.paste(head, (0, 0))
    out.paste(Image.fromarray(img), (0, 14))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out, quality=88)
    print(f"wrote {args.out} ({out.width}x{out.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
