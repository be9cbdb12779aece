"""The three pipelines of the side-by-side benchmark (pipelines.py), and the measuring around them.

(a) eager: the five networks on eager PyTorch (``torch_networks``); (b) ort: the serving runner on ONNX Runtime in
this process (``ort_networks``), both walked through an ensemble's steps by ``Pipeline`` with the serving pre/post
code (both from ``drape_serving.ensemble``, which the in-process reference runs too); (c) triton: the closed-loop gRPC load (``closed_loop``) and Triton's per-model statistics (``triton_stats``,
``counters_delta``, ``stats_rows``). Also the request pairs, a cProfile of (b) and the per-network
microbenchmark. Imported by pipelines.py (the driver, tables, plot) and recolor_fallback.py.
"""
from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import time
from pathlib import Path

import numpy as np

from drape_core import contract
from drape_core.card import CARD_FILE, read_card
# the pbtxt-driven in-process ensemble, shared with drape_serving.reference
from drape_serving.ensemble import (Network, Pipeline, Step, ensemble_models, load_config,  # noqa: F401
                                    ort_networks, version_dir)


# ----------------------------------------------------------------------------- (a) eager, (b) ort


def torch_networks(checkpoints: Path) -> dict[str, Network]:
    """(a): every network rebuilt from its training card and weights.pt, eval mode, eager PyTorch."""
    import torch
    from drape_export.onnx_export import load_network

    nets: dict[str, Network] = {}
    for name, spec in contract.NETWORKS.items():
        net, _ = load_network(checkpoints / name)

        def run(feeds, net=net):
            with torch.inference_mode():
                outs = net(*[torch.from_numpy(feeds[n]) for n in net.input_names])
            outs = outs if isinstance(outs, tuple) else (outs,)
            return {n: o.numpy() for n, o in zip(net.output_names, outs)}

        nets[spec.model_name] = run
    return nets


# ----------------------------------------------------------------------------------------- inputs


def make_requests(n: int, hw: tuple[int, int], seed: int = 1000) -> dict[str, list[tuple[bytes, bytes]]]:
    """``n`` distinct JPEG pairs per ensemble from the seeded synthetic studio, at ``hw`` (H, W)."""
    from drape_runtime.codec import encode_jpeg
    from drape_train.data.synth import render_pair

    def jpeg(rgb):
        return encode_jpeg(rgb, quality=90)

    out: dict[str, list[tuple[bytes, bytes]]] = {"tryon": [], "recolor": []}
    for i in range(n):
        a, b = render_pair(seed + i, *hw)
        out["tryon"].append((jpeg(a.image), jpeg(b.cloth)))
        out["recolor"].append((jpeg(b.image), jpeg(a.cloth)))
    return out


def max_abs_diff(x: tuple[np.ndarray, ...], y: tuple[np.ndarray, ...]) -> int:
    return max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(x, y))


# ------------------------------------------------------------------------------------- (c) triton


async def closed_loop(url: str, spec: contract.EnsembleSpec, requests: list[tuple[bytes, bytes]],
                      concurrency: int, warmup_s: float, measure_s: float) -> tuple[list[float], float]:
    """``concurrency`` clients back to back; after ``warmup_s`` (pipeline filling), count what completes in the next
    ``measure_s``. Returns the latencies of those requests and the window length: steady state, no ramp or drain."""
    from drape_client import NO_RETRY, AsyncDrapeClient

    async with AsyncDrapeClient(url, "grpc", 300.0, retry=NO_RETRY) as client:
        await client.infer(spec, requests[0])  # connection up before the clock starts
        start = time.perf_counter()
        lo, hi = start + warmup_s, start + warmup_s + measure_s
        latencies: list[float] = []
        counter = iter(range(1 << 30))

        async def worker():
            for i in counter:
                t0 = time.perf_counter()
                if t0 >= hi:
                    return
                await client.infer(spec, requests[i % len(requests)])
                t1 = time.perf_counter()
                if lo <= t1 < hi:
                    latencies.append((t1 - t0) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, measure_s


def triton_stats(client, headers: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Cumulative per-model counters (ns and counts) from Triton's statistics extension (an admin API).

    Triton records a request's statistics just after sending its response, so a read right after the last
    answer can miss it: read until two reads 20 ms apart agree (at most ~1 s).
    """
    prev = _read_stats(client, headers)
    for _ in range(50):
        time.sleep(0.02)
        cur = _read_stats(client, headers)
        if cur == prev:
            break
        prev = cur
    return prev


def _read_stats(client, headers: dict[str, str] | None) -> dict[str, dict[str, float]]:
    raw = client.get_inference_statistics(as_json=True, headers=headers)
    out = {}
    for m in raw.get("model_stats", []):
        s = m.get("inference_stats", {})
        row = {"inference_count": float(m.get("inference_count", 0)),
               "execution_count": float(m.get("execution_count", 0))}
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            row[f"{key}_ns"] = float(s.get(key, {}).get("ns", 0))
            row[f"{key}_count"] = float(s.get(key, {}).get("count", 0))
        out[m["name"]] = row
    return out


def counters_delta(before: dict, after: dict, into: dict | None = None) -> dict[str, dict[str, float]]:
    """``after - before`` per model and counter, added to ``into`` (windows of several rounds add up)."""
    into = {} if into is None else into
    for name, a in after.items():
        b = before.get(name, {})
        acc = into.setdefault(name, {})
        for k, v in a.items():
            acc[k] = acc.get(k, 0.0) + v - b.get(k, 0.0)
    return into


def stats_rows(counters: dict, models: list[str]) -> dict[str, dict[str, float]]:
    """Per model: requests, average batch, and per-request ms in queue / input / infer / output."""
    rows = {}
    for name in models:
        d = counters.get(name)
        if d is None:
            continue
        n = d["success_count"] or 1.0
        rows[name] = {"requests": d["success_count"],
                      "avg_batch": d["inference_count"] / d["execution_count"] if d["execution_count"] else 0.0,
                      "total_ms": d["success_ns"] / n / 1e6, "queue_ms": d["queue_ns"] / n / 1e6,
                      "input_ms": d["compute_input_ns"] / n / 1e6, "infer_ms": d["compute_infer_ns"] / n / 1e6,
                      "output_ms": d["compute_output_ns"] / n / 1e6}
    return rows


# --------------------------------------------------------------------------------------- profiles


def profile_ort(pipeline: Pipeline, requests: list[tuple[bytes, bytes]], n: int, top: int = 12) -> str:
    """cProfile of (b): where the in-process time goes, by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        pipeline(requests[i % len(requests)])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:start + top + 1])


def network_profile(repo: Path, checkpoints: Path, iters: int, onnx_dir: Path | None = None) -> list[dict]:
    """Per network, ms per sample: ONNX Runtime at 1 and 2 threads (batch 1 and 8) next to eager torch, and the
    export's FP16 graph (``<onnx_dir>/<name>/model.fp16.onnx``, when there is one) at 1 thread.

    Answers "is it the runtime, the threads, the batch size or the precision": the same weights in isolation, no
    pre/post and no serving, each configuration warmed up once and timed as the median of ``iters`` runs.
    """
    import onnxruntime as ort
    import torch

    from drape_export.onnx_export import load_network, sample_inputs

    def median_ms(fn, batch):
        fn()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0 / batch)
        return float(np.median(times))

    rows = []
    default_threads = torch.get_num_threads()
    try:
        for name, spec in contract.NETWORKS.items():
            vdir = version_dir(repo / spec.model_name)
            card = read_card(vdir if (vdir / CARD_FILE).is_file() else repo / spec.model_name)
            net, _ = load_network(checkpoints / name)
            row = {"network": spec.model_name}
            fp16 = onnx_dir / name / "model.fp16.onnx" if onnx_dir is not None else None
            runs = [(vdir / "model.onnx", "ort", threads, batch) for threads, batch in ((1, 1), (1, 8), (2, 1))]
            if fp16 is not None and fp16.is_file():
                runs.append((fp16, "ort fp16", 1, 1))
            for path, label, threads, batch in runs:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                feeds = dict(zip(card.input_names, sample_inputs(card, batch, seed=0)))
                row[f"{label} {threads}t b{batch}"] = median_ms(lambda: sess.run(None, feeds), batch)
            for threads, batch in ((1, 1), (2, 1), (1, 8)):
                torch.set_num_threads(threads)
                xs = [torch.from_numpy(x) for x in sample_inputs(card, batch, seed=0)]

                def fwd():
                    with torch.inference_mode():
                        net(*xs)

                row[f"torch {threads}t b{batch}"] = median_ms(fwd, batch)
            rows.append(row)
    finally:
        torch.set_num_threads(default_threads)
    return rows
