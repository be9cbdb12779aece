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

`--optimise N` adds an oracle row: per pair, N Adam steps on the control points that maximise the soft IoU of the
warped still mask with the *visible garment itself* (starting at the least-squares fit; the best hard IoU seen is
kept). A GMM sees far less than this oracle (no target mask, one network for all pairs). Local search, so not a
proof of the best TPS: on 8 test pairs at 5x5 it reaches 0.801 after 300 steps, 0.825 after 1500, 0.832 after
3000. Slow (~7 s per pair at 5x5 and 1500 steps on one core): use --stride.
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


def optimise_iou(kernel: torch.Tensor, points: np.ndarray, mask: torch.Tensor, target: torch.Tensor,
                 steps: int, lr: float = 0.01) -> float:
    """Best hard IoU of the warped ``mask`` [1,1,H,W] with ``target`` [H,W] (bool) over ``steps`` Adam steps on
    the TPS source points (soft-IoU loss), starting at ``points`` [K,2]; the start counts too."""
    h, w = target.shape
    pts = torch.tensor(points, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([pts], lr=lr)
    t = target.float()[None, None]

    def warp():
        return F.grid_sample(mask, (kernel @ pts).reshape(1, h, w, 2), align_corners=False)

    with torch.no_grad():
        best = _iou(warp()[0, 0] > 0.5, target)
    for step in range(steps):
        m = warp()
        inter = (m * t).sum()
        loss = 1 - inter / (m.sum() + t.sum() - inter + 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24 or step == steps - 1:
            with torch.no_grad():
                best = max(best, _iou(warp()[0, 0] > 0.5, target))
    return best


def bound(data: str, split: str, grid_size: int, stride: int = 1, optimise: int = 0) -> tuple[float, ...]:
    """(mean IoU of the exact warp, mean IoU of the least-squares TPS fit) over the split's pairs, and with
    ``optimise`` > 0 the mean IoU of the TPS optimised for IoU against the target itself (an oracle)."""
    ds = NetworkDataset(data, split, "gmm")
    h, w = ds[0]["garment"].shape[-2:]
    kernel_t = tps_kernel(grid_size, h, w)
    kernel = kernel_t.numpy()
    exact, fitted, oracle = [], [], []
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
        if optimise:
            oracle.append(optimise_iou(kernel_t, points, mask, target, optimise))
    out = (float(np.mean(exact)), float(np.mean(fitted)))
    return out + (float(np.mean(oracle)), float(np.mean(np.array(oracle) >= 0.9))) if optimise else out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drape_train.tps_bound", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth", help="synthetic dataset root (default: %(default)s)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--grids", type=int, nargs="+", default=[5, 9], help="TPS grid sizes to fit (default: 5 9)")
    ap.add_argument("--stride", type=int, default=2, help="every n-th pair (default: %(default)s)")
    ap.add_argument("--optimise", type=int, default=0, metavar="N",
                    help="also report the oracle: N Adam steps per pair on the TPS points for IoU against the target "
                         "itself (default: off; 1500 is within ~0.01 of 3000)")
    args = ap.parse_args(argv)
    for g in args.grids:
        r = bound(args.data, args.split, g, args.stride, args.optimise)
        line = f"{g}x{g} TPS: exact-warp IoU {r[0]:.3f}, best least-squares TPS fit IoU {r[1]:.3f}"
        if args.optimise:
            line += f", TPS optimised for IoU against the target (oracle) {r[2]:.3f} ({r[3]:.0%} of pairs >= 0.90)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
