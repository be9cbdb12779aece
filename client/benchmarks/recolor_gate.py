"""What recolor's keep-the-photo gate costs recolor_postprocess, side by side in one run.

    python client/benchmarks/recolor_gate.py                         # 200 calls per series
    python client/benchmarks/recolor_gate.py --calls 300 --sizes 256x192,1024x768,4096x3072 --out build/bench/gate.json

The postprocess logic (``drape_serving.prepost.RecolorPostLayout.run``, what the python model executes per batch
of one) on the same tensors with the gate off (``keep_below=0``) and on (the default), for a correction the gate
lets through (+0.05 on every channel: a mean CIE76 change above the threshold, so both series do the same work plus
the gate's test) and one it stops (+1/255: the photo comes back as it is). Calls are interleaved (call i of every
series before call i + 1 of any) so drift on a shared machine hits all series alike. Prints p50 / p90 in ms per
series and the gate's p50 ratio; the model side is always 256x192, ``--sizes`` are the on-model photo's sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from drape_serving.prepost import RECOLOR_KEEP_BELOW, RecolorPostLayout, image_to_tensor, recolor_change

HW = (256, 192)


def series(size: str) -> dict[str, tuple[RecolorPostLayout, dict]]:
    h, w = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    model_input, _ = image_to_tensor(orig, HW)
    mask = np.ones((1, *HW), np.float32)
    out = {}
    for label, shift in (("applied", 0.05), ("kept", 1.0 / 255)):
        recolored = model_input + np.float32(shift)
        assert (recolor_change(recolored, model_input, mask) < RECOLOR_KEEP_BELOW) == (label == "kept")
        inputs = {"recolored": recolored[None], "model_input": model_input[None], "garment_mask": mask[None],
                  "orig": orig[None]}
        out[f"{size} {label}, gate off"] = (RecolorPostLayout(keep_below=0.0), inputs)
        out[f"{size} {label}, gate on"] = (RecolorPostLayout(), inputs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python client/benchmarks/recolor_gate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200, help="measured calls per series (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured calls per series first (default: %(default)s)")
    p.add_argument("--sizes", default="256x192,1024x768", help="on-model photo sizes HxW (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the numbers as JSON")
    a = p.parse_args(argv)
    runs = {k: v for size in a.sizes.split(",") for k, v in series(size).items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(a.warmup + a.calls):
        for name, (layout, inputs) in runs.items():
            t = time.perf_counter()
            layout.run(inputs)
            if i >= a.warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    rows = {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90))} for k, v in times.items()}
    print(f"{'series':<34} {'p50 ms':>8} {'p90 ms':>8} {'gate p50 ratio':>15}")
    for name, r in rows.items():
        ratio = ""
        if name.endswith("gate on"):
            off = rows[name.replace("gate on", "gate off")]["p50_ms"]
            r["ratio_p50"] = r["p50_ms"] / off
            ratio = f"{r['ratio_p50']:.2f}x"
        print(f"{name:<34} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {ratio:>15}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"rows": rows, "calls": a.calls, "machine": platform.node(),
                                     "cpus": os.cpu_count(), "load": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
