"""Choose recolor_postprocess's still-consistency fallback margin on a split (validation, never the test split).

For every item the served decision is made as the postprocess makes it (`drape_runtime.prepost`: the keep-gate,
then the Gaussian transfer where it is closer to the still's shading-free colours by more than the margin), and
the pooled CIEDE2000 inside the true garment is printed for each margin, beside the network alone, the transfer
alone and the gate alone. One forward pass serves every margin.

  python -m drape_train.tune_fallback --checkpoint build/default/checkpoints/recolor --data data/synth --split val
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from drape_core.recolor_policy import RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW, fallback_candidate, recolor_change
from drape_train.datasets import NetworkDataset
from drape_train.evaluate import load_objective
from drape_train.objectives import delta_e2000

MARGINS = (0.0, 0.01, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.08)


@torch.no_grad()
def decisions(checkpoint: Path, data: str, split: str, batch: int = 8) -> np.ndarray:
    """Per item: [kept by the gate, network's still distance, transfer's still distance, summed dE2000 of the
    network / the transfer / the photo inside the true garment, garment pixels]."""
    obj = load_objective(checkpoint)
    obj.net.eval()
    rows = []
    for b in DataLoader(NetworkDataset(data, split, "recolor", seed=12345), batch_size=batch):
        inputs = obj.inputs(b)
        out, m = obj.net(*inputs)
        for o, i, g, s, sl, t, gm in zip(out.numpy(), b["on_model"].numpy(), m.numpy(), b["still"].numpy(),
                                         inputs[3].numpy(), b["target"], b["garment_mask"]):
            candidate = fallback_candidate(o, i, g, s, sl)   # what recolor_fallback compares, at every margin
            inside = gm[0] > 0.5

            def err(x):
                return float(delta_e2000(torch.from_numpy(np.asarray(x, np.float32))[None], t[None])[0, 0][inside].sum())

            if candidate is None:   # no garment or no still: the network's output at every margin
                d_net = d_tr = np.nan
                e_tr = err(o)
            else:
                d_net, d_tr, e_tr = candidate.network_distance, candidate.distance, err(candidate.image)
            rows.append([recolor_change(o, i, g) < RECOLOR_KEEP_BELOW, d_net, d_tr, err(o), e_tr, err(i),
                         inside.sum()])
    return np.array(rows, dtype=np.float64)


def served(rows: np.ndarray, margin: float) -> tuple[float, int]:
    """Pooled dE2000 of what is served at ``margin``, and how many items fall back."""
    kept, d_net, d_tr, e_net, e_tr, e_photo, n = rows.T
    fell = (kept == 0) & (d_tr + margin < d_net)
    return float(np.where(kept > 0, e_photo, np.where(fell, e_tr, e_net)).sum() / n.sum()), int(fell.sum())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("build/default/checkpoints/recolor"),
                    help="recolor checkpoint directory (default: %(default)s)")
    ap.add_argument("--data", default="data/synth", help="dataset root (default: %(default)s)")
    ap.add_argument("--split", default="val", help="split to tune on; keep the test split for reporting (default: %(default)s)")
    ap.add_argument("--margins", type=float, nargs="+", default=list(MARGINS), help="margins to score")
    a = ap.parse_args(argv)
    rows = decisions(a.checkpoint, a.data, a.split)
    kept, _, _, e_net, e_tr, e_photo, n = rows.T
    pooled = lambda e: e.sum() / n.sum()   # noqa: E731
    print(f"{a.split} of {a.data} ({len(rows)} items): network {pooled(e_net):.3f}, transfer {pooled(e_tr):.3f}, "
          f"network with the keep-gate {pooled(np.where(kept > 0, e_photo, e_net)):.3f}")
    for margin in a.margins:
        value, fell = served(rows, margin)
        mark = "  (the default)" if margin == RECOLOR_FALLBACK_MARGIN else ""
        print(f"  margin {margin:g}: served {value:.3f}, fell back {fell}/{len(rows)}{mark}")


if __name__ == "__main__":
    main()
