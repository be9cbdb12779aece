"""What the request-size gateway costs: c=1 latency through nginx vs direct to Triton, side by side in one run.

    python benchmarks/gateway.py                                # 40 requests per series, sample pair
    python benchmarks/gateway.py --requests 30 --sizes 256x192,1024x768 --out build/bench/gateway.json

One tritonserver on the CPU repository and one gateway (``drape_serving.gateway.start_gateway``, the config the
Kubernetes sidecar runs) in front of it, both on free ports. Every series is the thin client (``DrapeClient``, no
retries) at concurrency 1 sending the same encoded image pair: {tryon, recolor} x {gRPC, HTTP} x {direct, gateway}.
Requests are interleaved (request i of every series, in an order rotated each round, before request i + 1 of any)
so drift on a shared machine hits direct and gateway alike. Latency is around the client call: encode-free (the
bytes are prepared once), send, server, receive, decode. Reports p50 / p90 / mean per series and the gateway's p50
overhead in ms and as a ratio; ``--out`` writes everything as JSON.

On a CPU the inference itself (~100 ms, jittering by tens of ms on a shared machine) hides what the proxy costs,
so two transport-only series isolate it, interleaved the same way: a health round trip (``ready()``: small
request, small answer) and a body just under the limit (two 16 MiB images of zeros, raw tritonclient) that Triton
refuses after receiving it ("not a JPEG or PNG"): the gateway reads it whole, spools it to disk and forwards it.

``--sizes`` takes HxW sizes: ``sample`` is build/samples (person.jpg + garment.jpg, 256x192); others are rendered
by the training data's procedural studio (torch-free), JPEG quality 90, like pipelines.py.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = ROOT / "build" / "model_repository" / "cpu"
SAMPLES = ROOT / "build" / "samples"


def pair_for(size: str) -> tuple[str, bytes, bytes]:
    """(label, person bytes, garment bytes) for ``sample`` or ``HxW``."""
    if size == "sample":
        person, garment = (SAMPLES / "person.jpg").read_bytes(), (SAMPLES / "garment.jpg").read_bytes()
        from PIL import Image

        w, h = Image.open(io.BytesIO(person)).size
        return f"{h}x{w} sample jpeg", person, garment
    from drape_runtime.codec import encode_jpeg
    from drape_train.data.synth import render_pair  # torch-free procedural renderer

    h, w = (int(v) for v in size.lower().split("x"))
    a, b = render_pair(0, h, w)
    return f"{h}x{w} jpeg", encode_jpeg(a.image, quality=90), encode_jpeg(b.cloth, quality=90)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(ms), 2), "p90_ms": round(percentile(ms, 0.9), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "n": len(ms)}


def transport_rows(urls: dict[tuple[str, str], str], clients: dict, requests: int, warmup: int) -> list[dict]:
    """Health round trips and a just-under-the-limit body Triton refuses: the proxy's own cost."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from drape_core import contract

    big = np.zeros((1, contract.MAX_IMAGE_BYTES), np.uint8)
    raw = {k: (grpcclient.InferenceServerClient(u.split("://", 1)[1]) if k[0] == "grpc" else
               httpclient.InferenceServerClient(u.split("://", 1)[1], network_timeout=300, connection_timeout=60))
           for k, u in urls.items()}

    def big_request(key) -> None:
        module = grpcclient if key[0] == "grpc" else httpclient
        inputs = []
        for name in contract.TRYON.input_names:
            tensor = module.InferInput(name, list(big.shape), "UINT8")
            tensor.set_data_from_numpy(big)
            inputs.append(tensor)
        try:
            raw[key].infer("tryon", inputs)
        except InferenceServerException as exc:
            if "not a JPEG or PNG" not in exc.message():
                raise
        else:
            raise AssertionError("zeros decoded as an image")

    rows = []
    try:
        for kind, n, call in (("health round trip (ready)", requests, lambda k: clients[k].ready()),
                              (f"2 x {contract.MAX_IMAGE_BYTES} B body, refused by Triton", max(5, requests // 4),
                               big_request)):
            keys = list(urls)
            times: dict = {k: [] for k in keys}
            for i in range(warmup + n):
                shift = i % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    start = time.perf_counter()
                    call(key)
                    if i >= warmup:
                        times[key].append((time.perf_counter() - start) * 1000)
            for proto in ("grpc", "http"):
                row = {"size": kind, "ensemble": "-", "protocol": proto,
                       "direct": summary(times[(proto, "direct")]), "gateway": summary(times[(proto, "gateway")])}
                row["overhead_p50_ms"] = round(row["gateway"]["p50_ms"] - row["direct"]["p50_ms"], 2)
                row["ratio_p50"] = round(row["gateway"]["p50_ms"] / row["direct"]["p50_ms"], 3)
                rows.append(row)
    finally:
        for c in raw.values():
            c.close()
    return rows


def run(repo: Path, sizes: list[str], requests: int, warmup: int, transport: bool = True) -> dict:
    from drape_client import NO_RETRY, DrapeClient
    from drape_serving.gateway import MAX_BODY_BYTES, start_gateway
    from drape_serving.server import start_server

    log = ROOT / "build" / "bench" / "gateway.tritonserver.log"
    with start_server(repo, log_file=log, ready_timeout=300) as server, \
            start_gateway(server.http_port, server.grpc_port) as gateway:
        urls = {("grpc", "direct"): f"grpc://{server.grpc_url}", ("grpc", "gateway"): f"grpc://{gateway.grpc_url}",
                ("http", "direct"): f"http://{server.http_url}", ("http", "gateway"): f"http://{gateway.http_url}"}
        clients = {k: DrapeClient(u, timeout_s=300, retry=NO_RETRY) for k, u in urls.items()}
        results = []
        try:
            for size in sizes:
                label, person, garment = pair_for(size)
                series = [(ens, proto, route) for ens in ("tryon", "recolor") for proto in ("grpc", "http")
                          for route in ("direct", "gateway")]
                times: dict[tuple[str, str, str], list[float]] = {s: [] for s in series}
                reference: dict[tuple[str, str], object] = {}
                for i in range(warmup + requests):
                    shift = i % len(series)
                    for ens, proto, route in series[shift:] + series[:shift]:
                        client = clients[(proto, route)]
                        start = time.perf_counter()
                        out = client.tryon(person, garment) if ens == "tryon" else client.recolor(person, garment)[0]
                        elapsed = time.perf_counter() - start
                        ref = reference.setdefault((ens, label), out)
                        if out.shape != ref.shape or (out != ref).any():
                            raise AssertionError(f"{ens} {proto} {route}: answer differs from the first one")
                        if i >= warmup:
                            times[(ens, proto, route)].append(elapsed * 1000)
                for ens in ("tryon", "recolor"):
                    for proto in ("grpc", "http"):
                        row = {"size": label, "request_bytes": len(person) + len(garment), "ensemble": ens,
                               "protocol": proto}
                        for route in ("direct", "gateway"):
                            row[route] = summary(times[(ens, proto, route)])
                        row["overhead_p50_ms"] = round(row["gateway"]["p50_ms"] - row["direct"]["p50_ms"], 2)
                        row["ratio_p50"] = round(row["gateway"]["p50_ms"] / row["direct"]["p50_ms"], 3)
                        results.append(row)
            if transport:
                results += transport_rows(urls, clients, requests, warmup)
        finally:
            for c in clients.values():
                c.close()
    load = os.getloadavg()
    return {"rows": results, "requests": requests, "warmup": warmup, "limit_bytes": MAX_BODY_BYTES,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "loadavg_at_end": [round(x, 2) for x in load]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gateway.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="model repository (default %(default)s)")
    p.add_argument("--sizes", default="sample", help="comma-separated: sample and/or HxW (default %(default)s)")
    p.add_argument("--requests", type=int, default=40, help="measured requests per series (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default %(default)s)")
    p.add_argument("--no-transport", action="store_true", help="skip the health and large-body series")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        p.error("--requests must be >= 1 and --warmup >= 0")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    result = run(args.repo, sizes, args.requests, args.warmup, transport=not args.no_transport)
    print(f"{'request':<40} {'ensemble':<8} {'proto':<5} {'direct p50/p90 ms':>18} {'gateway p50/p90 ms':>19} "
          f"{'overhead p50':>13} {'ratio':>6}")
    for r in result["rows"]:
        d, g = r["direct"], r["gateway"]
        print(f"{r['size']:<40} {r['ensemble']:<8} {r['protocol']:<5} {d['p50_ms']:>9.1f}/{d['p90_ms']:<8.1f} "
              f"{g['p50_ms']:>10.1f}/{g['p90_ms']:<8.1f} {r['overhead_p50_ms']:>+10.2f} ms {r['ratio_p50']:>6.3f}")
    print(f"n={result['requests']} per series, load average at the end {result['machine']['loadavg_at_end']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
