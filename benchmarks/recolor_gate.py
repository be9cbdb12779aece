"""What recolor's keep-the-photo gate and still-consistency fallback cost recolor_postprocess, side by side in one run.

    python benchmarks/recolor_gate.py                         # 200 calls per series
    python benchmarks/recolor_gate.py --calls 300 --sizes 256x192,1024x768,4096x3072 --out build/bench/gate.json

The postprocess logic (``drape_runtime.prepost.RecolorPostLayout.run``, what the python model executes per batch
of one) on the same tensors:

* gate off (``keep_below=0``) and on (the default), without the still (so no fallback), for a correction the gate
  lets through (+0.05 on every channel: a mean CIE76 change above the threshold, so both series do the same work
  plus the gate's test) and one it stops (+1/255: the photo comes back as it is);
* the applied correction again with the still and its mask, as the ensemble sends them: once where the network's
  output is the still's colours (the fallback is computed and not taken: "applied") and once where the still is
  another colour (the classical transfer is served: "fallback"). Their ratio is to the gate-on row without the
  still, i.e. what the fallback adds.

By default both garment masks cover the whole 256x192 model input, so the fallback's sorts run over every pixel
(its worst case); ``--garment`` / ``--still-garment`` shrink them to a band of that fraction of the rows (the
synthetic test split's stills average 0.40 of the frame).
Calls are interleaved (call i of every series before call i + 1 of any) so drift on a shared machine hits all
series alike. Prints p50 / p90 in ms per series and each row's p50 ratio to the row it adds to; the model side is
always 256x192, ``--sizes`` are the on-model photo's sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from drape_core.recolor_policy import RECOLOR_KEEP_BELOW, recolor_change
from drape_runtime.prepost import RecolorPostLayout, image_to_tensor

HW = (256, 192)


def band(fraction: float, inside: float, outside: float) -> np.ndarray:
    """``[1,H,W]`` at model resolution: ``inside`` on the middle ``fraction`` of the rows, ``outside`` elsewhere."""
    if not 0 < fraction <= 1:
        raise SystemExit(f"a garment fraction must be in (0, 1], got {fraction}")
    out = np.full((1, *HW), outside, np.float32)
    rows = max(1, round(fraction * HW[0]))
    top = (HW[0] - rows) // 2
    out[:, top: top + rows] = inside
    return out


def series(size: str, garment: float = 1.0,
           still_garment: float = 1.0) -> dict[str, tuple[RecolorPostLayout, dict, str | None]]:
    """name -> (layout, inputs, the name of the series it adds to); each input's decision is checked here."""
    h, w = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    model_input, _ = image_to_tensor(orig, HW)
    mask = band(garment, 1.0, 0.0)
    logits = band(still_garment, 8.0, -8.0)                          # the still's garment mask logits
    out = {}
    for label, shift in (("applied", 0.05), ("kept", 1.0 / 255)):
        recolored = model_input + np.float32(shift)
        assert (recolor_change(recolored, model_input, mask) < RECOLOR_KEEP_BELOW) == (label == "kept")
        inputs = {"recolored": recolored[None], "model_input": model_input[None], "garment_mask": mask[None],
                  "orig": orig[None]}
        out[f"{size} {label}, gate off"] = (RecolorPostLayout(keep_below=0.0), inputs, None)
        out[f"{size} {label}, gate on"] = (RecolorPostLayout(), inputs, f"{size} {label}, gate off")
        if label == "applied":
            for decision, still in (("applied", np.clip(recolored, 0, 1)), ("fallback", model_input[[2, 0, 1]] * 0.6)):
                with_still = {**inputs, "still": still[None].astype(np.float32), "still_mask_logits": logits[None]}
                seen: list[str] = []
                RecolorPostLayout().run(with_still, seen)
                assert seen == [decision], (size, decision, seen)
                out[f"{size} {decision}, fallback on"] = (RecolorPostLayout(), with_still, f"{size} applied, gate on")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/recolor_gate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200, help="measured calls per series (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured calls per series first (default: %(default)s)")
    p.add_argument("--sizes", default="256x192,1024x768", help="on-model photo sizes HxW (default: %(default)s)")
    p.add_argument("--garment", type=float, default=1.0,
                   help="fraction of the model input's rows the on-model garment covers (default: %(default)s)")
    p.add_argument("--still-garment", type=float, default=1.0,
                   help="fraction of the still's rows its garment covers (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the numbers as JSON")
    a = p.parse_args(argv)
    runs = {k: v for size in a.sizes.split(",") for k, v in series(size, a.garment, a.still_garment).items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(a.warmup + a.calls):
        for name, (layout, inputs, _) in runs.items():
            t = time.perf_counter()
            layout.run(inputs)
            if i >= a.warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    rows = {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90))} for k, v in times.items()}
    print(f"{'series':<36} {'p50 ms':>8} {'p90 ms':>8} {'p50 ratio':>10}  to")
    for name, r in rows.items():
        base = runs[name][2]
        ratio = ""
        if base is not None:
            r["ratio_p50"], r["ratio_to"] = r["p50_ms"] / rows[base]["p50_ms"], base
            ratio = f"{r['ratio_p50']:.2f}x"
        print(f"{name:<36} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {ratio:>10}  {base or ''}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"rows": rows, "calls": a.calls, "garment": a.garment,
                                     "still_garment": a.still_garment, "machine": platform.node(),
                                     "cpus": os.cpu_count(), "load": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
