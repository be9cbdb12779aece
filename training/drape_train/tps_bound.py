"""How does the best TPS approximation of the *true* warp score on the GMM metric? A probe for the GMM bar.

    python -m drape_train.tps_bound --data data/synth --split test --grids 5 9

For every test pair: fit the grid_size x grid_size TPS control points to the exact flow by least squares on the
visible garment pixels, warp the still's mask with it, and report the warped-mask IoU against the visible garment
(the GMM metric). The exact flow itself scores 1.0; the TPS that follows the true correspondence most closely
scores 0.649 (5x5) / 0.733 (9x9) on data/synth test: it cannot cut the holes arms and hair make in the visible
garment, nor fold a sleeve. It is not an upper bound on the metric: an affine map that ignores the true
correspondence and stretches the still's mask to the centroid and spread of the full-resolution torso scores
0.750 (that torso contains the worn garment's outline, so the GMM may not use it); the GMM's garment-agnostic
version of that alignment (`GMM.align`, blurred body shape) scores 0.61 before any training.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from drape_train.datasets import NetworkDataset
from drape_train.models.gmm import tps_kernel


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp_min(1))


def bound(data: str, split: str, grid_size: int, stride: int = 1) -> tuple[float, float]:
    """(mean IoU of the exact warp, mean IoU of the least-squares TPS fit) over the split's pairs."""
    ds = NetworkDataset(data, split, "gmm")
    h, w = ds[0]["garment"].shape[-2:]
    kernel = tps_kernel(grid_size, h, w).numpy()
    exact, fitted = [], []
    for i in range(0, len(ds), stride):
        b = ds[i]
        if "flow" not in b:
            raise SystemExit(f"{data}: no exact warps (gt-warp/*.npz): this probe needs the synthetic studio")
        flow = b["flow"].numpy().transpose(1, 2, 0)
        visible = (flow[..., 0] > -1.5) & (b["target_mask"][0].numpy() > 0.5)
        points, *_ = np.linalg.lstsq(kernel[visible.ravel()], flow.reshape(-1, 2)[visible.ravel()], rcond=None)
        grid = torch.from_numpy((kernel @ points).reshape(1, h, w, 2)).float()
        mask = b["garment_mask"][None]
        target = b["target_mask"][0] > 0.5
        fitted.append(_iou(F.grid_sample(mask, grid, align_corners=False)[0, 0] > 0.5, target))
        exact_grid = torch.from_numpy(flow[None]).float()
        exact.append(_iou(F.grid_sample(mask, exact_grid, align_corners=False)[0, 0] > 0.5, target))
    return float(np.mean(exact)), float(np.mean(fitted))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drape_train.tps_bound", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth", help="synthetic dataset root (default: %(default)s)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--grids", type=int, nargs="+", default=[5, 9], help="TPS grid sizes to fit (default: 5 9)")
    ap.add_argument("--stride", type=int, default=2, help="every n-th pair (default: %(default)s)")
    args = ap.parse_args(argv)
    for g in args.grids:
        exact, fitted = bound(args.data, args.split, g, args.stride)
        print(f"{g}x{g} TPS: exact-warp IoU {exact:.3f}, best least-squares TPS fit IoU {fitted:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
