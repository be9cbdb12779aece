"""Are two builds the same? For refactors that must not change behaviour.

    python benchmarks/compare_builds.py onnx  A/onnx B/onnx          # every graph, random and real inputs
    python benchmarks/compare_builds.py weights A/checkpoints B/checkpoints

``onnx``: for each network in both folders, model.onnx and model.fp16.onnx of A and B run on the same inputs (the
export's random region maps, ``sample_inputs(card, 3, 1)``, and its real samples, ``RealSamples``); prints the max
|diff| over all outputs. ``weights``: whether every tensor of each weights.pt is bit-identical. Exit status 1 if
anything differs (``--tolerance`` for the graphs, default 0).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def compare_onnx(a: Path, b: Path, tolerance: float) -> bool:
    import onnxruntime as ort

    from drape_core.card import read_card
    from drape_export.onnx_export import FP16_FILE, ONNX_FILE, RealSamples, sample_inputs

    names = sorted(p.parent.name for p in a.glob("*/card.json") if (b / p.parent.name / "card.json").is_file())
    same = bool(names)
    samples: dict[tuple[int, int], RealSamples] = {}
    with tempfile.TemporaryDirectory(prefix="drape-compare-") as tmp:
        for name in names:
            card = read_card(a / name)
            if card.hw not in samples:
                samples[card.hw] = RealSamples(Path(tmp) / f"{card.hw[0]}x{card.hw[1]}", *card.hw)
            feeds = [dict(zip(card.input_names, xs)) for xs in (sample_inputs(card, 3, 1), samples[card.hw].inputs(card))]
            for file in (ONNX_FILE, FP16_FILE):
                if not (a / name / file).is_file() or not (b / name / file).is_file():
                    continue
                sa, sb = (ort.InferenceSession(str(d / name / file), providers=["CPUExecutionProvider"]) for d in (a, b))
                worst = max(float(np.abs(x - y).max()) for feed in feeds
                            for x, y in zip(sa.run(None, feed), sb.run(None, feed)))
                same &= worst <= tolerance
                print(f"{name:<14} {file:<16} max|diff| {worst:.3g}")
    return same


def compare_weights(a: Path, b: Path) -> bool:
    import torch

    names = sorted(p.parent.name for p in a.glob("*/weights.pt") if (b / p.parent.name / "weights.pt").is_file())
    same = bool(names)
    for name in names:
        wa, wb = (torch.load(d / name / "weights.pt", map_location="cpu", weights_only=True) for d in (a, b))
        equal = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        same &= equal
        print(f"{name:<14} weights {'bit-identical' if equal else 'DIFFER'}")
    return same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/compare_builds.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("onnx", "weights"))
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.0, help="onnx: largest |diff| still the same (default 0)")
    args = ap.parse_args(argv)
    same = compare_onnx(args.a, args.b, args.tolerance) if args.what == "onnx" else compare_weights(args.a, args.b)
    print("same" if same else "DIFFERENT (or nothing to compare)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
