"""Side-by-side benchmark of the three ways to run drape, in one run, on the same weights and the same images.

    python benchmarks/pipelines.py            # make bench
    python benchmarks/pipelines.py --requests 20 --image-hw 1024x768 --concurrency 1,4,16

(a) eager   the seeds' infer.py way: the five networks loaded from build/checkpoints with drape_train.models +
            torch, one request at a time: decode/letterbox -> networks -> composite, sequentially.
(b) ort     the same ensemble steps in this process, networks on ONNX Runtime through the serving runner
            (drape_runtime.runner.BatchedOnnxRunner, same ONNX files and thread settings as the repository).
(c) triton  the `tryon` and `recolor` ensembles on a tritonserver started here on free ports, driven by the
            thin client over gRPC at concurrency 1, 4 and 16.

All three walk the ensemble steps read from the repository's config.pbtxt and use the same drape_serving pre/post
code, so they differ only in how networks run and how steps are scheduled. Concurrency 1 is measured
interleaved (request i on a, then b, then c, each after an idle gap so no pipeline's spinning thread pool runs
into the next), so drift on a shared machine hits all three alike. (b) runs the ORT thread count the repository
serves; when that is not one thread per core, two profile pipelines show what the other setting would do:
ort-<cores>t (the runner at one thread per core, ONNX Runtime's default spin-waiting) and ort-<cores>t-nospin
(the same with session.intra_op.allow_spinning=0).

The run also measures this machine's GEMM peak (numpy and torch float32 matmul loops), counts the networks' FLOPs
from the ONNX graphs (flops.py), records Triton's per-model statistics, a cProfile of (b) and a per-network
microbenchmark (ORT vs torch, 1/2 threads, batch 1/8), prints ratios against the targets and writes results.json
and pipelines.png to --out.

The pipelines and the Triton load generator are in pipeline_runners.py; this file drives a run and writes the
tables, results.json and the plot.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from flops import count_macs  # noqa: E402
from pipeline_runners import (  # noqa: E402  (tests/test_bench.py reaches the pipelines through this module)
    Pipeline,
    closed_loop,
    counters_delta,
    ensemble_models,
    load_config,
    make_requests,
    max_abs_diff,
    network_profile,
    ort_networks,
    profile_ort,
    stats_rows,
    torch_networks,
    triton_stats,
    version_dir,
)

from drape_core import contract  # noqa: E402

TARGET_THROUGHPUT_X = 2.0     # Triton throughput >= 2x eager
TARGET_OVERHEAD = 0.15        # Triton latency at concurrency 1 <= 1.15x in-process ORT


# ---------------------------------------------------------------------------------------- machine


def machine() -> dict:
    info = {"cpu": platform.processor() or "?", "logical_cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "?").strip()
        info["cores_per_socket"] = fields.get("Core(s) per socket", "?").strip()
        info["threads_per_core"] = fields.get("Thread(s) per core", "?").strip()
        flags = fields.get("Flags", "")
        info["simd"] = [f for f in ("avx2", "avx512f", "fma", "amx_tile") if f in flags.split()]
    except (OSError, subprocess.CalledProcessError):
        pass
    info["gpu"] = Path("/dev/nvidiactl").exists()
    return info


class CpuMeter:
    """How much CPU other processes took while we ran: the honest error bar of a benchmark on a shared machine.

    Busy time of the whole machine (/proc/stat) minus this process tree's own (os.times, children included once
    they are reaped, so read it after the server has stopped). Steal is time the hypervisor gave to other VMs.
    """

    _BUSY = (0, 1, 2, 5, 6)  # user nice system irq softirq (jiffies)

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK")
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        t = os.times()
        busy = sum(fields[i] for i in self._BUSY) / self.hz
        steal = (fields[7] if len(fields) > 7 else 0) / self.hz
        return time.monotonic(), busy, steal, t.user + t.system + t.children_user + t.children_system

    def report(self) -> dict[str, float]:
        end = self._read()
        wall, busy, steal, ours = (e - s for e, s in zip(end, self.start))
        capacity = wall * (os.cpu_count() or 1)
        foreign = max(0.0, busy - ours)
        return {"wall_s": wall, "cpu_s_ours": ours, "cpu_s_others": foreign, "others_pct": 100 * foreign / capacity,
                "steal_pct": 100 * steal / capacity}


def gemm_peak(seconds: float = 1.5, n: int = 1024) -> dict[str, float]:
    """Sustained float32 GEMM GFLOP/s of numpy and torch on all cores: the machine's practical peak."""
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    result = {}
    for name, mm, x, y in (("numpy", np.matmul, a, b), ("torch", torch.mm, torch.from_numpy(a), torch.from_numpy(b))):
        mm(x, y)  # warm up (thread pool, page faults)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            mm(x, y)
            reps += 1
        result[name] = 2.0 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
    result["peak"] = max(result["numpy"], result["torch"])
    return result


def ensemble_flops(repo: Path) -> dict[str, dict]:
    """FLOPs per request (batch 1) of each ensemble's networks, from the served ONNX graphs."""
    per_net = {}
    for spec in contract.NETWORKS.values():
        g = count_macs(version_dir(repo / spec.model_name) / "model.onnx")
        per_net[spec.model_name] = {"gflop": g.flops / 1e9, "by_op_gmac": {k: v / 1e9 for k, v in g.by_op.items()},
                                    "unresolved": g.unresolved}
    return {e.name: {"gflop": sum(per_net[n]["gflop"] for n in e.networks),
                     "networks": {n: per_net[n] for n in e.networks}}
            for e in (contract.TRYON, contract.RECOLOR)}


def serving_settings(repo: Path) -> dict[str, dict]:
    """Instances, ORT threads and batching of every model, read from the served configs (they change over time)."""
    out = {}
    for model_dir in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
        cfg = load_config(model_dir / "config.pbtxt")
        groups = cfg.get("instance_group", [])
        batching = cfg.get("dynamic_batching")
        out[model_dir.name] = {
            "instances": sum(int(g.get("count", 1)) for g in groups) if groups else None,
            "intra_op_threads": cfg.get("parameters", {}).get("intra_op_num_threads", {}).get("string_value"),
            "max_queue_delay_us": None if batching is None else int(batching.get("max_queue_delay_microseconds", 0)),
            "preferred_batch": [int(b) for b in batching.get("preferred_batch_size", [])] if batching else None,
        }
    return out


def same_onnx(repo: Path, onnx_dir: Path) -> dict[str, bool]:
    """Whether each served model.onnx is byte-identical to the export in onnx_dir."""
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    return {spec.model_name: (onnx_dir / name / "model.onnx").is_file()
            and digest(version_dir(repo / spec.model_name) / "model.onnx") == digest(onnx_dir / name / "model.onnx")
            for name, spec in contract.NETWORKS.items()}


# ------------------------------------------------------------------------------------------ stats


@dataclass
class Series:
    pipeline: str          # eager | ort | triton
    ensemble: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0    # for concurrency > 1: first send to last answer

    @property
    def throughput(self) -> float:
        """Requests per second: sequential runs use busy time, concurrent runs wall time."""
        busy = self.wall_s if self.concurrency > 1 else sum(self.latencies_ms) / 1000.0
        return len(self.latencies_ms) / busy if busy > 0 else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self, gflop_per_request: float, peak_gflops: float) -> dict:
        gflops = self.throughput * gflop_per_request
        return {"pipeline": self.pipeline, "ensemble": self.ensemble, "concurrency": self.concurrency,
                "requests": len(self.latencies_ms), "throughput_rps": self.throughput,
                "p50_ms": self.pct(50), "p95_ms": self.pct(95), "p99_ms": self.pct(99),
                "mean_ms": float(np.mean(self.latencies_ms)) if self.latencies_ms else float("nan"), "gflops": gflops,
                "pct_of_peak": 100 * gflops / peak_gflops}


# ------------------------------------------------------------------------------------------- runs


def run(args: argparse.Namespace) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(width=None if sys.stdout.isatty() else 130)
    repo, out = args.repo.resolve(), args.out
    out.mkdir(parents=True, exist_ok=True)
    specs = [contract.ENSEMBLES[e] for e in args.ensembles]
    meter = CpuMeter()
    info = machine()
    info["load_start"] = os.getloadavg()
    console.print(f"[bold]machine[/]: {info['cpu']}, {info['logical_cpus']} logical CPUs "
                  f"({info.get('cores_per_socket')} cores/socket, {info.get('threads_per_core')} threads/core), "
                  f"SIMD {info.get('simd')}, load average {info['load_start'][0]:.2f}")
    if info["load_start"][0] > args.max_load:
        console.print(f"[yellow]warning[/]: 1-min load average {info['load_start'][0]:.2f} > {args.max_load}: "
                      "another process is using the CPU, absolute numbers will be low (ratios are side by side)")

    manifest = json.loads((repo / "manifest.json").read_text())
    hw_model = (manifest["resolution"]["height"], manifest["resolution"]["width"])
    identical = same_onnx(repo, args.onnx)
    console.print(f"model resolution {hw_model[0]}x{hw_model[1]}; request images {args.image_hw[0]}x{args.image_hw[1]} "
                  f"JPEG; served ONNX identical to {args.onnx}: {all(identical.values())}")
    flops = ensemble_flops(repo)
    for name in args.ensembles:
        parts = ", ".join(f"{n} {v['gflop']:.3f}" for n, v in flops[name]["networks"].items())
        console.print(f"  {name}: {flops[name]['gflop']:.3f} GFLOP per request ({parts})")

    console.print("measuring the GEMM peak ...")
    peak = gemm_peak()
    console.print(f"  float32 GEMM 1024^3: numpy {peak['numpy']:.1f}, torch {peak['torch']:.1f} GFLOP/s "
                  f"-> peak {peak['peak']:.1f}")

    import torch

    requests = make_requests(args.distinct, args.image_hw)
    served_threads = {v["intra_op_threads"] for v in serving_settings(repo).values() if v["intra_op_threads"]}
    cores = os.cpu_count() or 1
    # In-process pipelines, interleaved at c=1: (a) eager, (b) ORT as served and, for the profile, the same runner
    # at one thread per core with ONNX Runtime's default spin-waiting and without it.
    local = {"eager": torch_networks(args.checkpoints), "ort": ort_networks(repo)}
    if served_threads != {str(cores)} and not args.no_variants:
        local[f"ort-{cores}t"] = ort_networks(repo, threads=cores)
        local[f"ort-{cores}t-nospin"] = ort_networks(repo, threads=cores, spinning=False)
    pipes = {kind: {s.name: Pipeline(repo, s, nets) for s in specs} for kind, nets in local.items()}
    ort = pipes["ort"]
    console.print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); onnxruntime "
                  f"{sorted(served_threads)} thread(s) per session as served; in-process pipelines: {', '.join(pipes)}")

    from drape_client import NO_RETRY, DrapeClient
    from drape_serving.server import start_server
    import tritonclient.grpc as grpcclient

    series: list[Series] = []
    stats: dict[str, dict] = {}
    checks: dict[str, int] = {}
    with start_server(repo, log_file=out / "tritonserver.log", ready_timeout=240) as server:
        console.print(f"tritonserver ready in {server.startup_s:.1f}s on gRPC {server.grpc_url}")
        admin = grpcclient.InferenceServerClient(server.grpc_url)
        # The statistics API is restricted to the admin key when the server sets one.
        admin_headers = server.admin_headers("grpc") if hasattr(server, "admin_headers") else None
        with DrapeClient(server.grpc_url, "grpc", 300.0, retry=NO_RETRY) as client:
            for spec in specs:  # warm-up and the cross-check: same inputs, same answers
                reqs = requests[spec.name]
                for _ in range(args.warmup):
                    outs = {kind: p[spec.name](reqs[0]) for kind, p in pipes.items()}
                    served = client.infer(spec, reqs[0])
                for kind, out_k in outs.items():
                    checks[f"{spec.name} {kind} vs triton"] = max_abs_diff(out_k, served)
                for p in pipes.values():
                    p[spec.name].step_s.clear()
            console.print("max |difference| of uint8 outputs on the same request: "
                          + ", ".join(f"{k} {v}" for k, v in checks.items()))

            # Rounds: every round runs a slice of every measurement (c=1 interleaved, then each concurrency), so a
            # neighbour that wakes up halfway through the run slows all columns alike instead of one.
            per_round = max(1, args.requests // args.rounds)
            by_key: dict[tuple[str, str, int], Series] = {}
            counters: dict[str, dict] = {}
            columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("rounds", total=args.rounds * len(specs))
                for rnd in range(args.rounds):
                    for spec in specs:
                        reqs = requests[spec.name]
                        fns = [p[spec.name] for p in pipes.values()] + [lambda r, spec=spec: client.infer(spec, r)]
                        kinds = [*pipes, "triton"]
                        progress.update(task, description=f"round {rnd + 1}/{args.rounds} {spec.name} c=1")
                        before = triton_stats(admin, admin_headers)
                        for i in range(rnd * per_round, (rnd + 1) * per_round):
                            req = reqs[i % len(reqs)]
                            for kind, fn in zip(kinds, fns):
                                # Idle gap: spinning thread pools (OpenMP in torch, ONNX Runtime's) of the previous
                                # pipeline must not eat into the next one's time; each starts on a quiet CPU.
                                time.sleep(args.gap_ms / 1000.0)
                                t0 = time.perf_counter()
                                fn(req)
                                s = by_key.setdefault((kind, spec.name, 1), Series(kind, spec.name, 1))
                                s.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                        counters_delta(before, triton_stats(admin, admin_headers),
                                       counters.setdefault(f"{spec.name} c=1", {}))
                        for c in args.concurrency:
                            if c == 1:
                                continue
                            progress.update(task, description=f"round {rnd + 1}/{args.rounds} {spec.name} c={c}")
                            before = triton_stats(admin, admin_headers)
                            lat, window = asyncio.run(closed_loop(server.grpc_url, spec, reqs, c, args.warmup_s,
                                                                  args.window_s))
                            counters_delta(before, triton_stats(admin, admin_headers),
                                           counters.setdefault(f"{spec.name} c={c}", {}))
                            s = by_key.setdefault(("triton", spec.name, c), Series("triton", spec.name, c))
                            s.latencies_ms += lat
                            s.wall_s += window
                        progress.advance(task)
            series = [by_key[k] for k in sorted(by_key, key=lambda k: (k[1] != "tryon", k[2], [*pipes, "triton"]
                                                                       .index(k[0])))]
            for key, cnt in counters.items():
                stats[key] = stats_rows(cnt, ensemble_models(repo, contract.ENSEMBLES[key.split()[0]]))
        admin.close()

    if args.net_iters > 0:
        console.print("per-network microbenchmark (ONNX Runtime vs torch, threads, batch) ...")
        nets = network_profile(repo, args.checkpoints, args.net_iters, args.onnx)
    else:
        nets = []
    steps = {f"{kind} {name}": {k: 1000 * v / args.requests for k, v in p.step_s.items()}
             for kind, by_name in pipes.items() for name, p in by_name.items()}
    profiles = {s.name: profile_ort(ort[s.name], requests[s.name], args.profile_requests) for s in specs}
    info["load_end"] = os.getloadavg()
    info["cpu_noise"] = meter.report()
    summaries = [s.summary(flops[s.ensemble]["gflop"], peak["peak"]) for s in series]
    return {"machine": info, "command": " ".join([Path(sys.executable).name] + sys.argv), "peak": peak,
            "flops": flops, "identical_onnx": identical, "model_hw": hw_model, "image_hw": args.image_hw,
            "checks": checks, "series": summaries, "triton_stats": stats, "step_ms": steps, "profiles": profiles,
            "settings": serving_settings(repo), "networks": nets,
            "torch_threads": torch.get_num_threads(), "raw": {f"{s.pipeline} {s.ensemble} c={s.concurrency}":
                                                               s.latencies_ms for s in series}}


# ----------------------------------------------------------------------------------------- report


def ratios(results: dict) -> dict[str, dict[str, float]]:
    """Per ensemble: Triton throughput over (a) and (b) at each concurrency, and c=1 latency over (b)."""
    out = {}
    by = {(s["pipeline"], s["ensemble"], s["concurrency"]): s for s in results["series"]}
    for ens in sorted({s["ensemble"] for s in results["series"]}):
        a, b = by[("eager", ens, 1)], by[("ort", ens, 1)]
        r = {}
        for (pipe, e, c), s in sorted(by.items()):
            if pipe == "triton" and e == ens:
                r[f"throughput c={c} / eager"] = s["throughput_rps"] / a["throughput_rps"]
                r[f"throughput c={c} / ort"] = s["throughput_rps"] / b["throughput_rps"]
        t1 = by[("triton", ens, 1)]
        r["best throughput / eager"] = max(v for k, v in r.items() if k.endswith("/ eager"))
        r["latency p50 c=1 / ort"] = t1["p50_ms"] / b["p50_ms"]
        r["latency mean c=1 / ort"] = t1["mean_ms"] / b["mean_ms"]
        for (pipe, e, c), s in sorted(by.items()):
            if pipe.startswith("ort-") and e == ens:   # in-process ORT with another thread count
                r[f"latency p50 c=1 / {pipe}"] = t1["p50_ms"] / s["p50_ms"]
        r["ort p50 / eager p50"] = b["p50_ms"] / a["p50_ms"]
        out[ens] = r
    return out


def report(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 130)
    table = Table(title=f"pipelines at model resolution {results['model_hw'][0]}x{results['model_hw'][1]}, "
                        f"{results['image_hw'][0]}x{results['image_hw'][1]} JPEG requests")
    for col in ("ensemble", "pipeline", "conc.", "req", "req/s", "p50 ms", "p95 ms", "p99 ms", "GFLOP/s", "% peak"):
        table.add_column(col, justify="left" if col in ("ensemble", "pipeline") else "right")
    for s in results["series"]:
        table.add_row(s["ensemble"], s["pipeline"], str(s["concurrency"]), str(s["requests"]),
                      f"{s['throughput_rps']:.2f}", f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}",
                      f"{s['gflops']:.2f}", f"{s['pct_of_peak']:.1f}")
    console.print(table)
    for ens, r in ratios(results).items():
        ok_tp = r["best throughput / eager"] >= TARGET_THROUGHPUT_X
        ok_lat = r["latency p50 c=1 / ort"] <= 1 + TARGET_OVERHEAD
        console.print(f"[bold]{ens}[/]: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
        console.print(f"  target throughput >= {TARGET_THROUGHPUT_X:.0f}x eager: "
                      f"{'[green]met' if ok_tp else '[red]NOT met'}[/] ({r['best throughput / eager']:.2f}x); "
                      f"target c=1 latency <= {1 + TARGET_OVERHEAD:.2f}x ort: "
                      f"{'[green]met' if ok_lat else '[red]NOT met'}[/] ({r['latency p50 c=1 / ort']:.2f}x)")
        for k, v in r.items():
            if k.startswith("latency p50 c=1 / ort-"):
                console.print(f"  Triton c=1 against in-process {k.split('/ ')[1]}: {v:.2f}x "
                              f"({'[green]within' if v <= 1 + TARGET_OVERHEAD else '[red]over'}[/] "
                              f"{1 + TARGET_OVERHEAD:.2f}x)")
    for key, rows in results["triton_stats"].items():
        t = Table(title=f"Triton per-model statistics, {key} (ms per request)")
        for col in ("model", "requests", "avg batch", "total", "queue", "input", "infer", "output"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for name, row in rows.items():
            t.add_row(name, f"{row['requests']:.0f}", f"{row['avg_batch']:.2f}", f"{row['total_ms']:.2f}",
                      f"{row['queue_ms']:.2f}", f"{row['input_ms']:.2f}", f"{row['infer_ms']:.2f}",
                      f"{row['output_ms']:.2f}")
        console.print(t)
    settings = results.get("settings", {})
    nets = {k: v for k, v in settings.items() if v.get("intra_op_threads") is not None}
    if nets:
        v = next(iter(nets.values()))
        prepost = {k: v2["instances"] for k, v2 in settings.items() if k.endswith(("_preprocess", "_postprocess"))}
        console.print(f"served configuration: networks {v['instances']} instance(s) x {v['intra_op_threads']} ORT "
                      f"thread(s), max_queue_delay {v['max_queue_delay_us']} us, preferred batch "
                      f"{v['preferred_batch']}; pre/post instances {sorted(set(prepost.values()))}")
    if results.get("networks"):
        cols = list(dict.fromkeys(k for row in results["networks"] for k in row if k != "network"))
        t = Table(title="per-network ms per sample (same graph and weights, no serving)")
        t.add_column("network")
        for c in cols:
            t.add_column(c, justify="right")
        for row in results["networks"]:
            t.add_row(row["network"], *(f"{row[c]:.1f}" if c in row else "-" for c in cols))
        console.print(t)
    for key, steps in results["step_ms"].items():
        console.print(f"in-process step ms per request, {key}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    for name, text in results["profiles"].items():
        console.print(f"[bold]cProfile of (b) {name}[/] (top functions by own time)\n{text}")
    noise = results["machine"].get("cpu_noise")
    if noise:
        available = noise["wall_s"] * (results["machine"]["logical_cpus"] or 1)
        console.print(f"noise: other processes used {noise['cpu_s_others']:.1f} of {available:.0f} CPU-s during the "
                      f"run ({noise['others_pct']:.1f}%), hypervisor steal {noise['steal_pct']:.1f}%; this run used "
                      f"{noise['cpu_s_ours']:.0f} CPU-s")
    gpu = "present" if results["machine"]["gpu"] else "none on this machine: the fp16 CUDA 1024x768 row is not measured"
    console.print(f"GPU: {gpu}. Load average start {results['machine']['load_start'][0]:.2f}, "
                  f"end {results['machine']['load_end'][0]:.2f}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ensembles = sorted({s["ensemble"] for s in results["series"]})
    fig, axes = plt.subplots(len(ensembles), 2, figsize=(12, 3.6 * len(ensembles)), squeeze=False)
    for row, ens in enumerate(ensembles):
        ss = [s for s in results["series"] if s["ensemble"] == ens]
        labels = [f"{s['pipeline']}\nc={s['concurrency']}" for s in ss]
        x = np.arange(len(ss))
        ax = axes[row][0]
        colors = {"eager": "#999999", "ort": "#6699cc", "triton": "#33aa33"}
        bars = ax.bar(x, [s["throughput_rps"] for s in ss], color=[colors.get(s["pipeline"], "#99bbdd") for s in ss])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_xticks(x, labels)
        ax.set_ylabel("requests / s")
        ax.set_title(f"{ens}: throughput")
        ax = axes[row][1]
        for k, (q, off) in enumerate((("p50_ms", -0.27), ("p95_ms", 0.0), ("p99_ms", 0.27))):
            ax.bar(x + off, [s[q] for s in ss], width=0.27, label=q.split("_")[0])
        ax.set_xticks(x, labels)
        ax.set_ylabel("latency ms")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{ens}: latency")
    m = results["machine"]
    fig.suptitle(f"drape pipelines, {m['cpu']} ({m['logical_cpus']} CPUs), model {results['model_hw'][0]}x"
                 f"{results['model_hw'][1]}, GEMM peak {results['peak']['peak']:.0f} GFLOP/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pipelines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT / "build/model_repository/cpu")
    ap.add_argument("--onnx", type=Path, default=ROOT / "build/onnx")
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "build/checkpoints")
    ap.add_argument("--out", type=Path, default=ROOT / "build/bench")
    ap.add_argument("--ensembles", type=lambda s: [e for e in s.split(",") if e], default=["tryon", "recolor"])
    ap.add_argument("--requests", type=int, default=40,
                    help="c=1 requests per pipeline and ensemble, split over the rounds (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=4, help="measurement rounds (default %(default)s)")
    ap.add_argument("--window-s", type=float, default=4.0,
                    help="measured seconds per concurrency level and round (default %(default)s)")
    ap.add_argument("--warmup-s", type=float, default=1.0,
                    help="unmeasured seconds before each concurrent window (default %(default)s)")
    ap.add_argument("--concurrency", type=lambda s: sorted({int(c) for c in s.split(",")} | {1}), default=[1, 4, 16],
                    help="Triton concurrency levels; 1 is always run (default 1,4,16)")
    ap.add_argument("--image-hw", type=_hw, default=None,
                    help="request image HxW (default: the model resolution, e.g. 256x192)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct image pairs cycled through (default %(default)s)")
    ap.add_argument("--warmup", type=lambda s: max(1, int(s)), default=3)
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the ort-<cores>t[-nospin] profile pipelines (only eager, ort, triton)")
    ap.add_argument("--gap-ms", type=float, default=50.0,
                    help="idle time before each timed request at c=1 (default %(default)s; not counted)")
    ap.add_argument("--profile-requests", type=int, default=10, help="requests of (b) under cProfile")
    ap.add_argument("--net-iters", type=int, default=8,
                    help="timed runs per configuration in the per-network microbenchmark (0 skips it)")
    ap.add_argument("--max-load", type=float, default=0.5, help="warn when the 1-min load average is above this")
    args = ap.parse_args(argv)
    for e in args.ensembles:
        if e not in contract.ENSEMBLES:
            ap.error(f"unknown ensemble {e!r}")
    if not (args.repo / "manifest.json").is_file():
        ap.error(f"{args.repo} is not a model repository: run `make quick` first")
    if args.image_hw is None:
        res = json.loads((args.repo / "manifest.json").read_text())["resolution"]
        args.image_hw = (res["height"], res["width"])
    results = run(args)
    results["ratios"] = ratios(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, args.out / "pipelines.png")
    report(results)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'pipelines.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
