"""Measure serving settings on this machine against a real tritonserver: ``python -m drape_export sweep``.

    python benchmarks/sweep.py --onnx-dir build/onnx --instances 1 2 --intra-op-threads 1 2 --repeats 3
    python -m drape_export sweep ...    # the same script, forwarded from a source checkout

For every combination of network instance count, ONNX Runtime intra-op threads, dynamic-batcher queue delay
and pre/post instance count, the sweep assembles a CPU repository from the exported networks with those
settings (``drape_export.repository.ServingSettings``), starts tritonserver on free ports, and drives it with a
closed-loop gRPC load (``--concurrency`` clients, each sending the next request when its last one returns,
alternating ``tryon`` and ``recolor``) for ``--duration`` seconds per concurrency level. It reports throughput
and client-side latency percentiles as a Markdown table (what BENCHMARKS.md records).

perf_analyzer is not used: the ``perf_analyzer`` wheel on PyPI is an empty placeholder, and the real binary
ships only in the Triton SDK container. The load generator here is a plain threaded tritonclient loop.

Timings on a shared machine are noisy: the sweep waits until the 1-minute load average is below
``--max-load`` before starting, measures all compared configurations in the same run, and with
``--repeats N`` measures every configuration N times in rotated order (round k starts at configuration k), so
a burst of outside load hits different configurations in different rounds; the table reports the median
round and the range of throughput.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drape_core import contract

from drape_export.repository import DEFAULT_SETTINGS, ServingSettings, assemble


@dataclass(frozen=True)
class Result:
    settings: ServingSettings
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    throughput_range: tuple[float, float] | None = None  # min/max over repeats (set by `aggregate`)
    repeats: int = 1

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def aggregate(runs: list[Result]) -> list[Result]:
    """One row per (settings, concurrency): the median-throughput run, with the min-max range of all runs."""
    groups: dict[tuple[ServingSettings, int], list[Result]] = {}
    for r in runs:
        groups.setdefault((r.settings, r.concurrency), []).append(r)
    rows = []
    for (settings, c), group in groups.items():
        ordered = sorted(group, key=lambda r: r.throughput)
        mid = ordered[(len(ordered) - 1) // 2]
        rows.append(Result(settings, c, mid.requests, sum(r.errors for r in group), mid.seconds, mid.p50_ms,
                           mid.p95_ms, (ordered[0].throughput, ordered[-1].throughput), len(group)))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULT_SETTINGS
    parser.add_argument("--onnx-dir", default="build/onnx", help="exported networks (default: %(default)s)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2], help="network instance counts")
    parser.add_argument("--intra-op-threads", type=int, nargs="+", default=[1, 2], help="ORT threads per instance")
    parser.add_argument("--max-queue-delay-us", type=int, nargs="+", default=[0, d.max_queue_delay_us],
                        help="dynamic batcher queue delays")
    parser.add_argument("--prepost-instances", type=int, nargs="+", default=[d.prepost_instances],
                        help="python pre/post model instance counts")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="closed-loop clients")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=4.0, help="unmeasured seconds before each level")
    parser.add_argument("--person", default="build/samples/person.jpg", help="person / on-model image")
    parser.add_argument("--garment", default="build/samples/garment.jpg", help="garment / still image")
    parser.add_argument("--resize", default=None, metavar="WxH",
                        help="send both images resized to W x H (JPEG q90), e.g. 768x1024 for phone-sized photos")
    parser.add_argument("--max-load", type=float, default=0.7,
                        help="wait until the 1-minute load average is below this before starting")
    parser.add_argument("--wait-load-s", type=float, default=600.0, help="give up waiting for low load after this")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all configurations (rotated order)")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")


def _wait_for_quiet(max_load: float, limit_s: float) -> float:
    deadline = time.monotonic() + limit_s
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            return load
        if time.monotonic() > deadline:
            raise SystemExit(f"drape-export sweep: load average {load:.2f} stayed above {max_load} for "
                             f"{limit_s:.0f}s; timings would be meaningless (raise --max-load to force)")
        print(f"drape-export sweep: load average {load:.2f} >= {max_load}, waiting...", file=sys.stderr, flush=True)
        time.sleep(15)


def _encoded(path: Path, resize: str | None) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"drape-export sweep: {path} not found (make quick writes build/samples/)")
    if resize is None:
        return np.fromfile(path, dtype=np.uint8)[None]
    import io

    from PIL import Image

    try:
        w, h = (int(v) for v in resize.lower().split("x"))
    except ValueError:
        raise SystemExit(f"drape-export sweep: --resize wants WxH, got {resize!r}") from None
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC).save(buf, format="JPEG", quality=90)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)[None]


def _payloads(person: Path, garment: Path, resize: str | None = None) -> list[tuple[contract.EnsembleSpec, list[np.ndarray]]]:
    a, b = _encoded(person, resize), _encoded(garment, resize)
    return [(contract.TRYON, [a, b]), (contract.RECOLOR, [a, b])]


def _load(url: str, payloads, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    """Closed-loop load: ``concurrency`` threads, each with its own gRPC client. Returns latencies (s), errors, wall."""
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def worker(k: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        i = k
        while time.monotonic() < deadline:
            spec, arrays = payloads[i % len(payloads)]
            inputs = []
            for name, arr in zip(spec.input_names, arrays):
                inp = grpcclient.InferInput(name, list(arr.shape), "UINT8")
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            t0 = time.perf_counter()
            try:
                client.infer(spec.name, inputs, outputs=[grpcclient.InferRequestedOutput(spec.output_names[0])])
                ok = True
            except Exception:  # noqa: BLE001 - counted, the sweep reports error counts
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors[0] += 1
            i += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.monotonic() - start


def measure(settings: ServingSettings, onnx_dir: Path, payloads, concurrencies: list[int], duration: float,
            warmup: float, workdir: Path) -> list[Result]:
    from drape_serving.server import start_server

    repo = workdir / "repo"
    assemble(onnx_dir, repo, settings=settings)
    results = []
    with start_server(repo, log_file=workdir / "tritonserver.log", ready_timeout=240) as server:
        for c in concurrencies:
            _load(server.grpc_url, payloads, c, warmup)
            lat, errors, wall = _load(server.grpc_url, payloads, c, duration)
            ms = np.array(lat) * 1000.0 if lat else np.array([np.nan])
            results.append(Result(settings, c, len(lat), errors, wall, float(np.percentile(ms, 50)),
                                  float(np.percentile(ms, 95))))
    return results


def table(results: list[Result]) -> str:
    lines = ["| net instances | ORT threads | queue delay µs | pre/post instances | clients | req/s (median) | "
             "req/s range | p50 ms | p95 ms | errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r.settings
        lo, hi = r.throughput_range or (r.throughput, r.throughput)
        lines.append(f"| {s.instances} | {s.intra_op_threads} | {s.max_queue_delay_us} | {s.prepost_instances} | "
                     f"{r.concurrency} | {r.throughput:.2f} | {lo:.2f}-{hi:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | "
                     f"{r.errors} |")
    return "\n".join(lines)


def best(results: list[Result]) -> ServingSettings:
    """Highest throughput at the highest concurrency; ties (within 3%) go to the lower single-client p50."""
    top_c = max(r.concurrency for r in results)
    low_c = min(r.concurrency for r in results)
    loaded = [r for r in results if r.concurrency == top_c and r.errors == 0]
    peak = max(r.throughput for r in loaded)
    near = [r.settings for r in loaded if r.throughput >= 0.97 * peak]
    single = {r.settings: r.p50_ms for r in results if r.concurrency == low_c}
    return min(near, key=lambda s: single.get(s, float("inf")))


def run(args: argparse.Namespace) -> int:
    payloads = _payloads(Path(args.person), Path(args.garment), args.resize)
    combos = [ServingSettings(instances=i, intra_op_threads=t, max_queue_delay_us=d, prepost_instances=p)
              for i, t, d, p in itertools.product(args.instances, args.intra_op_threads, args.max_queue_delay_us,
                                                  args.prepost_instances)]
    load = _wait_for_quiet(args.max_load, args.wait_load_s)
    print(f"drape-export sweep: {len(combos)} configurations x clients {args.concurrency} x {args.repeats} rounds, "
          f"{args.duration:.0f}s each (load average {load:.2f}, {os.cpu_count()} CPUs)", file=sys.stderr, flush=True)
    runs: list[Result] = []
    loads = [load]
    for round_ in range(args.repeats):
        order = combos[round_ % len(combos):] + combos[:round_ % len(combos)]
        for k, settings in enumerate(order, 1):
            with tempfile.TemporaryDirectory(prefix="drape-sweep-") as tmp:
                got = measure(settings, Path(args.onnx_dir), payloads, args.concurrency, args.duration, args.warmup,
                              Path(tmp))
            runs += got
            loads.append(os.getloadavg()[0])
            summary = ", ".join(f"c={r.concurrency}: {r.throughput:.2f} req/s p50 {r.p50_ms:.0f} ms" for r in got)
            print(f"  [round {round_ + 1} {k}/{len(combos)}] instances={settings.instances} "
                  f"threads={settings.intra_op_threads} delay={settings.max_queue_delay_us}us "
                  f"prepost={settings.prepost_instances}: {summary}", file=sys.stderr, flush=True)
    results = aggregate(runs)
    results.sort(key=lambda r: (combos.index(r.settings), r.concurrency))
    text = table(results)
    choice = best(results)
    text += (f"\n\nBest: instances={choice.instances}, intra_op_threads={choice.intra_op_threads}, "
             f"max_queue_delay_us={choice.max_queue_delay_us}, prepost_instances={choice.prepost_instances} "
             f"(highest req/s at {max(args.concurrency)} clients; ties within 3% go to the lower 1-client p50). "
             f"1-minute load average during the run: {min(loads):.2f}-{max(loads):.2f}.")
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sweep.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
