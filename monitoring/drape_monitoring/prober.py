"""Golden-request prober: catches a Triton that answers health checks but no longer serves correct results.

Health probes only say the server is up and the models are loaded. A bad engine build, a wrong model
repository version or a broken pre/post change still passes them. The prober sends a stored ("golden")
``tryon`` and ``recolor`` request through the thin client on an interval and compares each answer with the
answer a known-good server gave for the same inputs:

* RGB outputs: mean CIE76 colour difference (ΔE, in CIELAB; ~2.3 is a just-noticeable difference) and
  mean absolute difference in 0..255 units;
* mask outputs: the fraction of pixels on the other side of 127 (and the mean absolute difference).

It exports, for Prometheus (names are the contract of monitoring/rules and the dashboard)::

    drape_prober_probes_total{ensemble, result}          counter, result = ok | mismatch | error
    drape_prober_latency_seconds{ensemble}               histogram of answered probes
    drape_prober_success{ensemble}                       1 when the last probe answered and matched golden
    drape_prober_last_success_timestamp_seconds{ensemble}
    drape_prober_quality_delta_e{ensemble, output}       mean ΔE vs golden (RGB outputs)
    drape_prober_quality_mad{ensemble, output}           mean |output - golden| (every output)
    drape_prober_quality_mask_mismatch_ratio{ensemble, output}
    drape_prober_ready                                   1 when the server and both ensembles are ready

Commands (``python -m drape_monitoring.prober --help``)::

    record  --url HOST:8001 --golden DIR    record golden inputs/outputs against a known-good server
    run     --url HOST:8001 --golden DIR    probe every --interval seconds, serve /metrics on --port
    run ... --once                          one round, print the results as JSON, exit 0 only if all ok

Golden answers are specific to a deployment (TensorRT FP16 engines on one GPU type answer slightly
differently from ONNX Runtime on a CPU): record them against the deployment being watched, right after
it was validated. ``record`` asks each ensemble twice and refuses to store a golden set whose two answers
already disagree beyond the thresholds (a non-deterministic server would make the prober flap).

Never imports torch: the prober runs in the serving image, which has none.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from drape_client import DrapeClient
from drape_core import contract
from drape_core.colour import rgb_to_lab

__all__ = [
    "Thresholds",
    "ProberConfig",
    "Quality",
    "ProbeResult",
    "Golden",
    "Prober",
    "METRIC_NAMES",
    "srgb_to_lab",
    "compare_output",
    "make_client",
    "record_golden",
    "load_golden",
    "main",
]

DEFAULT_PORT = 9109
DEFAULT_INTERVAL_S = 15.0
DEFAULT_TIMEOUT_S = 30.0
MANIFEST = "manifest.json"
SAMPLES = Path("build/samples")  # `make serve` writes a person and a garment photo here
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RESULTS = ("ok", "mismatch", "error")

# The series this module exports; rule and dashboard tests check their queries against this list.
METRIC_NAMES = (
    "drape_prober_probes_total",
    "drape_prober_latency_seconds_bucket",
    "drape_prober_latency_seconds_sum",
    "drape_prober_latency_seconds_count",
    "drape_prober_success",
    "drape_prober_last_success_timestamp_seconds",
    "drape_prober_quality_delta_e",
    "drape_prober_quality_mad",
    "drape_prober_quality_mask_mismatch_ratio",
    "drape_prober_ready",
)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Thresholds:
    """How far an answer may drift from golden and still count as correct.

    Defaults leave room for run-to-run noise (dynamic batching with other requests changes the GEMM
    blocking) while a different or broken model moves the mean ΔE by tens.
    """

    max_delta_e: float = 2.0  # mean CIE76 ΔE over the image
    max_mask_mismatch: float = 0.01  # fraction of mask pixels flipped

    def __post_init__(self) -> None:
        if not (self.max_delta_e > 0 and 0 < self.max_mask_mismatch < 1):
            raise ValueError(f"thresholds out of range: {self}")


@dataclass(frozen=True)
class ProberConfig:
    """Everything ``run`` needs; built from the CLI flags."""

    url: str
    golden_dir: Path
    protocol: str = "grpc"
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    thresholds: Thresholds | None = None  # None: the thresholds stored with the golden set

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be grpc or http, got {self.protocol!r}")
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval and timeout must be positive")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")


# ------------------------------------------------------------------------------- quality


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``[..., 3]`` -> CIELAB (D65) float64 ``[..., 3]``: ΔE is only meaningful in Lab
    (``drape_core.colour``, the one implementation every stage uses)."""
    return rgb_to_lab(np.asarray(rgb, np.uint8))


@dataclass(frozen=True)
class Quality:
    """One output compared with its golden answer; NaN fields do not apply to that kind of output."""

    output: str
    ok: bool
    mad: float
    delta_e: float = math.nan
    mask_mismatch: float = math.nan
    detail: str = ""

    def numbers(self) -> dict:
        """The measured differences that apply to this output (strict JSON: no NaN)."""
        return {k: v for k, v in (("mad", self.mad), ("delta_e", self.delta_e), ("mask_mismatch", self.mask_mismatch))
                if not math.isnan(v)}


def compare_output(name: str, got: np.ndarray, want: np.ndarray, thresholds: Thresholds) -> Quality:
    """Compare one output array with the golden one (shape must match: the contract keeps input sizes)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return Quality(name, False, math.nan, detail=f"{name}: got {got.dtype}{list(got.shape)}, "
                                                       f"golden {want.dtype}{list(want.shape)}")
    mad = float(np.mean(np.abs(got.astype(np.int16) - want.astype(np.int16))))
    if got.ndim == 3 and got.shape[-1] == 3:
        delta_e = float(np.mean(np.linalg.norm(srgb_to_lab(got) - srgb_to_lab(want), axis=-1)))
        ok = delta_e <= thresholds.max_delta_e
        return Quality(name, ok, mad, delta_e=delta_e,
                       detail="" if ok else f"{name}: mean ΔE {delta_e:.2f} > {thresholds.max_delta_e}")
    mismatch = float(np.mean((got > 127) != (want > 127)))
    ok = mismatch <= thresholds.max_mask_mismatch
    return Quality(name, ok, mad, mask_mismatch=mismatch,
                   detail="" if ok else f"{name}: {mismatch:.2%} of mask pixels differ > {thresholds.max_mask_mismatch:.2%}")


# -------------------------------------------------------------------------------- golden


@dataclass(frozen=True)
class GoldenCase:
    """One ensemble's golden request (encoded input bytes, by contract input name) and answer."""

    ensemble: str
    inputs: Mapping[str, bytes]
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Golden:
    cases: Mapping[str, GoldenCase]
    thresholds: Thresholds
    manifest: Mapping


def _sniff_ext(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")  # lossless: golden answers are compared pixel by pixel
    return buf.getvalue()


def make_client(url: str, protocol: str = "grpc", timeout_s: float = DEFAULT_TIMEOUT_S) -> DrapeClient:
    """A thin client that does not retry: the prober must report the first failure, not a retried success."""
    try:
        from drape_client.api import NO_RETRY
    except ImportError:  # a client without retries
        return DrapeClient(url, protocol, timeout_s)
    return DrapeClient(url, protocol, timeout_s, retry=NO_RETRY)


def _call(client: DrapeClient, ensemble: str, inputs: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """One request through the thin client; outputs by contract name."""
    spec = contract.ENSEMBLES[ensemble]
    args = [inputs[name] for name in spec.input_names]
    answer = client.tryon(*args) if ensemble == "tryon" else client.recolor(*args)
    answer = answer if isinstance(answer, tuple) else (answer,)
    return dict(zip(spec.output_names, answer))


def record_golden(
    client: DrapeClient,
    requests: Mapping[str, Mapping[str, bytes]],
    out_dir: str | Path,
    thresholds: Thresholds = Thresholds(),
    *,
    source: str = "",
) -> dict:
    """Ask each ensemble twice, check the two answers agree within ``thresholds``, store inputs + answer.

    ``requests`` maps ensemble -> contract input name -> encoded image bytes. Returns the manifest.
    Raises ``RuntimeError`` when the server disagrees with itself (golden would be meaningless).
    """
    out = Path(out_dir)
    manifest: dict = {
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "thresholds": dataclasses.asdict(thresholds),
        "ensembles": {},
    }
    staged: dict[str, tuple[Mapping[str, bytes], dict[str, np.ndarray]]] = {}
    for ensemble, inputs in requests.items():
        spec = contract.ENSEMBLES[ensemble]
        missing = set(spec.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{ensemble}: missing inputs {sorted(missing)}")
        first = _call(client, ensemble, inputs)
        second = _call(client, ensemble, inputs)
        baseline = [compare_output(name, second[name], first[name], thresholds) for name in spec.output_names]
        bad = [q.detail for q in baseline if not q.ok]
        if bad:
            raise RuntimeError(f"{ensemble}: the server disagrees with itself, refusing to record golden: {bad}")
        staged[ensemble] = (inputs, first)
        manifest["ensembles"][ensemble] = {
            "inputs": {name: name + _sniff_ext(inputs[name]) for name in spec.input_names},
            "outputs": {name: f"{name}.png" for name in spec.output_names},
            "sha256": {name: hashlib.sha256(inputs[name]).hexdigest() for name in spec.input_names},
            "baseline": {q.output: q.numbers() for q in baseline},
        }
    for ensemble, (inputs, outputs) in staged.items():
        case_dir = out / ensemble
        case_dir.mkdir(parents=True, exist_ok=True)
        files = manifest["ensembles"][ensemble]
        for name, data in inputs.items():
            if name in files["inputs"]:
                (case_dir / files["inputs"][name]).write_bytes(data)
        for name, array in outputs.items():
            (case_dir / files["outputs"][name]).write_bytes(_png(array))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return manifest


def load_golden(golden_dir: str | Path) -> Golden:
    """Read a golden set written by :func:`record_golden`; checks every file against the manifest."""
    root = Path(golden_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no golden set at {root} ({MANIFEST} missing): run `prober record` first")
    manifest = json.loads(path.read_text())
    cases = {}
    for ensemble, files in manifest["ensembles"].items():
        spec = contract.ENSEMBLES[ensemble]
        inputs = {name: (root / ensemble / files["inputs"][name]).read_bytes() for name in spec.input_names}
        for name, data in inputs.items():
            if hashlib.sha256(data).hexdigest() != files["sha256"][name]:
                raise ValueError(f"golden input {ensemble}/{files['inputs'][name]} does not match its checksum")
        outputs = {name: np.asarray(Image.open(root / ensemble / files["outputs"][name]))
                   for name in spec.output_names}
        cases[ensemble] = GoldenCase(ensemble, inputs, outputs)
    if not cases:
        raise ValueError(f"golden set at {root} has no ensembles")
    return Golden(cases, Thresholds(**manifest["thresholds"]), manifest)


# -------------------------------------------------------------------------------- prober


@dataclass(frozen=True)
class ProbeResult:
    ensemble: str
    result: str  # ok | mismatch | error
    latency_s: float
    qualities: tuple[Quality, ...] = ()
    error: str = ""

    def to_json(self) -> dict:
        return {
            "ensemble": self.ensemble,
            "result": self.result,
            "latency_s": round(self.latency_s, 4),
            "error": self.error,
            "quality": {q.output: {"ok": q.ok, **q.numbers(), **({"detail": q.detail} if q.detail else {})}
                        for q in self.qualities},
        }


class Prober:
    """Sends the golden requests and keeps the Prometheus series up to date.

    ``registry`` defaults to a private one so tests and embedders do not collide on metric names.
    """

    def __init__(self, client: DrapeClient, golden: Golden, thresholds: Thresholds | None = None, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.client = client
        self.golden = golden
        self.thresholds = thresholds or golden.thresholds
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.probes = Counter("drape_prober_probes", "Golden probes sent, by outcome (ok, mismatch, error)",
                              ["ensemble", "result"], registry=r)
        self.latency = Histogram("drape_prober_latency_seconds", "Latency of answered golden probes",
                                 ["ensemble"], buckets=LATENCY_BUCKETS, registry=r)
        self.success = Gauge("drape_prober_success", "1 when the last golden probe answered and matched golden",
                             ["ensemble"], registry=r)
        self.last_success = Gauge("drape_prober_last_success_timestamp_seconds",
                                  "Unix time of the last golden probe that matched", ["ensemble"], registry=r)
        self.delta_e = Gauge("drape_prober_quality_delta_e", "Mean CIE76 ΔE between the answer and golden",
                             ["ensemble", "output"], registry=r)
        self.mad = Gauge("drape_prober_quality_mad", "Mean absolute difference (0..255) between the answer and golden",
                         ["ensemble", "output"], registry=r)
        self.mask_mismatch = Gauge("drape_prober_quality_mask_mismatch_ratio",
                                   "Fraction of mask pixels that differ from golden", ["ensemble", "output"], registry=r)
        self.ready = Gauge("drape_prober_ready", "1 when the server and both ensembles report ready", registry=r)
        # Every series exists from the first scrape, so rate() and ratios never start from "no data".
        for ensemble in golden.cases:
            for result in RESULTS:
                self.probes.labels(ensemble, result)
            self.latency.labels(ensemble)
            self.success.labels(ensemble).set(0)
            for name in contract.ENSEMBLES[ensemble].output_names:
                for gauge in (self.delta_e, self.mad, self.mask_mismatch):
                    gauge.labels(ensemble, name).set(math.nan)

    def probe(self, ensemble: str) -> ProbeResult:
        case = self.golden.cases[ensemble]
        started = time.perf_counter()
        try:
            outputs = _call(self.client, ensemble, case.inputs)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is an "error" probe
            result = ProbeResult(ensemble, "error", time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        else:
            latency = time.perf_counter() - started
            qualities = tuple(compare_output(name, outputs[name], want, self.thresholds)
                              for name, want in case.outputs.items())
            result = ProbeResult(ensemble, "ok" if all(q.ok for q in qualities) else "mismatch", latency, qualities)
            self.latency.labels(ensemble).observe(latency)
        self._export(result)
        return result

    def _export(self, result: ProbeResult) -> None:
        e = result.ensemble
        self.probes.labels(e, result.result).inc()
        self.success.labels(e).set(1 if result.result == "ok" else 0)
        if result.result == "ok":
            self.last_success.labels(e).set(time.time())
        by_name = {q.output: q for q in result.qualities}
        for name in contract.ENSEMBLES[e].output_names:
            q = by_name.get(name)  # an error leaves no answer: NaN, not the stale value of an older probe
            self.delta_e.labels(e, name).set(q.delta_e if q else math.nan)
            self.mad.labels(e, name).set(q.mad if q else math.nan)
            self.mask_mismatch.labels(e, name).set(q.mask_mismatch if q else math.nan)

    def probe_all(self) -> list[ProbeResult]:
        """One round: readiness, then every golden request in turn."""
        self.ready.set(1 if self.client.ready() else 0)
        return [self.probe(ensemble) for ensemble in self.golden.cases]

    def run(self, interval_s: float, stop: threading.Event, on_round: Callable[[list[ProbeResult]], None] | None = None) -> None:
        """Probe every ``interval_s`` seconds (start to start) until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            results = self.probe_all()
            if on_round is not None:
                on_round(results)
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))


# ------------------------------------------------------------------------------------ CLI


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="localhost:8001", help="Triton host:port (gRPC 8001, or HTTP 8000 with --protocol http)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-request timeout, seconds (default %(default)s)")
    p.add_argument("--golden", required=True, help="golden set directory (manifest.json + one folder per ensemble)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drape-prober", description=__doc__.split("\n\n")[0],
        epilog="Metrics, thresholds and the golden layout: monitoring/README.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = sub.add_parser("record", help="record golden inputs and answers against a known-good server")
    _add_client_args(rec)
    rec.add_argument("--person", default=str(SAMPLES / "person.jpg"), help="tryon person photo (default %(default)s)")
    rec.add_argument("--garment", default=str(SAMPLES / "garment.jpg"), help="tryon garment still (default %(default)s)")
    rec.add_argument("--on-model", default=None, help="recolor on-model photo (default: the --person photo)")
    rec.add_argument("--still", default=None, help="recolor product still (default: the --garment still)")
    rec.add_argument("--max-delta-e", type=float, default=Thresholds.max_delta_e, help="mean ΔE allowed (default %(default)s)")
    rec.add_argument("--max-mask-mismatch", type=float, default=Thresholds.max_mask_mismatch,
                     help="fraction of mask pixels allowed to differ (default %(default)s)")

    run = sub.add_parser("run", help="probe on an interval and serve Prometheus metrics")
    _add_client_args(run)
    run.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between rounds (default %(default)s)")
    run.add_argument("--address", default="0.0.0.0", help="metrics bind address (default %(default)s)")
    run.add_argument("--port", type=int, default=DEFAULT_PORT, help="metrics port (default %(default)s)")
    run.add_argument("--once", action="store_true", help="one round, print JSON results, exit 0 only if every probe is ok")
    run.add_argument("--max-delta-e", type=float, default=None, help="override the golden set's ΔE threshold")
    run.add_argument("--max-mask-mismatch", type=float, default=None, help="override the golden set's mask threshold")
    return parser


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"drape-prober: cannot read {path}: {exc.strerror}") from None


def _record(args: argparse.Namespace) -> int:
    thresholds = Thresholds(args.max_delta_e, args.max_mask_mismatch)
    person, garment = _read(args.person), _read(args.garment)
    requests = {
        "tryon": {"person_image": person, "garment_image": garment},
        "recolor": {"on_model_image": _read(args.on_model) if args.on_model else person,
                    "still_image": _read(args.still) if args.still else garment},
    }
    with make_client(args.url, args.protocol, args.timeout) as client:
        if not client.ready():
            print(f"drape-prober: server at {args.url} is not ready", file=sys.stderr)
            return 1
        try:
            manifest = record_golden(client, requests, args.golden, thresholds, source=f"{args.protocol}://{args.url}")
        except (RuntimeError, ValueError) as exc:
            print(f"drape-prober: {exc}", file=sys.stderr)
            return 1
    for ensemble, info in manifest["ensembles"].items():
        agreement = ", ".join(f"{out} {k}={v:.3g}" for out, nums in info["baseline"].items() for k, v in nums.items())
        print(f"recorded {ensemble}: {', '.join(info['outputs'].values())} (two answers differ by {agreement})")
    print(f"golden set written to {args.golden}")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        golden = load_golden(args.golden)
    except (OSError, ValueError, KeyError) as exc:
        print(f"drape-prober: {exc}", file=sys.stderr)
        return 2
    thresholds = golden.thresholds
    if args.max_delta_e is not None or args.max_mask_mismatch is not None:
        thresholds = dataclasses.replace(
            thresholds,
            **({"max_delta_e": args.max_delta_e} if args.max_delta_e is not None else {}),
            **({"max_mask_mismatch": args.max_mask_mismatch} if args.max_mask_mismatch is not None else {}))
    config = ProberConfig(args.url, Path(args.golden), args.protocol, args.interval, args.timeout, args.address,
                          args.port, thresholds)
    with make_client(config.url, config.protocol, config.timeout_s) as client:
        prober = Prober(client, golden, config.thresholds)
        if args.once:
            results = prober.probe_all()
            for r in results:
                print(json.dumps(r.to_json(), allow_nan=False))
            return 0 if all(r.result == "ok" for r in results) else 1
        return _serve(prober, config)


def _serve(prober: Prober, config: ProberConfig) -> int:
    from prometheus_client import start_http_server

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server, thread = start_http_server(config.port, config.address, registry=prober.registry)
    print(f"drape-prober: probing {config.protocol}://{config.url} every {config.interval_s:g}s, "
          f"metrics on http://{config.address}:{config.port}/metrics", file=sys.stderr, flush=True)

    def log(results: Iterable[ProbeResult]) -> None:
        for r in results:
            if r.result != "ok":
                print(f"drape-prober: {r.ensemble} {r.result}: {r.error or '; '.join(q.detail for q in r.qualities if q.detail)}",
                      file=sys.stderr, flush=True)

    try:
        prober.run(config.interval_s, stop, log)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _record(args) if args.command == "record" else _run(args)


if __name__ == "__main__":
    sys.exit(main())
