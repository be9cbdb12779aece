"""Locust load test of the `tryon` and `recolor` ensembles through the thin client, over gRPC and HTTP.

    TRITON_GRPC_URL=127.0.0.1:8001 TRITON_HTTP_URL=127.0.0.1:8000 \
        locust -f client/locustfile.py --headless -u 4 -r 2 -t 60s --csv build/load/drape
    locust -f client/locustfile.py GrpcDrapeUser --host grpc://127.0.0.1:8001 ...   # one protocol

Targets: TRITON_GRPC_URL / TRITON_HTTP_URL (host:port) when set, else locust's ``--host`` for the user class whose
protocol its scheme names (grpc[s]://, http[s]://; a bare host:port goes to every class). A user without a target
reports one failure and stops, so a misconfigured run cannot pass.

Each request is one of the sample pairs ``make quick`` writes to build/samples (``DRAPE_SAMPLES``: another folder
with person.jpg, garment.jpg, on_model.jpg, still.jpg): ``tryon`` sends person + garment, ``recolor`` on_model +
still, resized to a mix of sizes and formats like app uploads: ``DRAPE_LOAD_SIZES`` (default ``333x250:5,1024x768:3,
2048x1536:1``, HxW:weight), each as JPEG and PNG. Latency is measured around the client call (send, server,
receive, decode); response size is the bytes of the returned arrays; a result whose size is not the input's
counts as a failure. Retries are off: a load test must see every UNAVAILABLE.

Other knobs: ``DRAPE_LOAD_ENSEMBLES`` (default ``tryon,recolor``), ``DRAPE_LOAD_WAIT`` (max think time in
seconds between a user's requests, default 0.5), ``DRAPE_LOAD_TIMEOUT`` (per-call seconds, default 60).
"""
from __future__ import annotations

import io
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from locust import User, between, events, task  # locust first: it monkey-patches the standard library for gevent
from locust.exception import StopUser
from grpc.experimental import gevent as grpc_gevent

grpc_gevent.init_gevent()  # gRPC calls must yield to the gevent hub, or one user blocks all the others

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from drape_client import NO_RETRY, DrapeClient, DrapeError, Endpoint  # noqa: E402
from drape_core import contract  # noqa: E402

DEFAULT_SIZES = "333x250:5,1024x768:3,2048x1536:1"
SAMPLES = Path(os.environ.get("DRAPE_SAMPLES") or Path(__file__).resolve().parents[1] / "build" / "samples")
SAMPLE_FILES = {"person": "person.jpg", "garment": "garment.jpg", "on_model": "on_model.jpg", "still": "still.jpg"}


def _check_samples(folder: Path) -> None:
    """Refuse to start without the sample images: every user would fail every request."""
    for name in SAMPLE_FILES.values():
        if not (folder / name).is_file():
            raise SystemExit(f"client/locustfile.py: sample image {folder / name} not found: run `make quick` (it "
                             f"writes build/samples/) or set DRAPE_SAMPLES to a folder with "
                             f"{', '.join(SAMPLE_FILES.values())}")


_check_samples(SAMPLES)


@dataclass(frozen=True)
class Payload:
    """One request's encoded inputs and what the answer must look like."""

    label: str                  # "1024x768 jpeg"
    images: tuple[bytes, bytes]
    hw: tuple[int, int]         # expected output height, width

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.images)


def parse_sizes(text: str) -> list[tuple[tuple[int, int], float]]:
    """``"333x250:5,1024x768"`` -> ``[((333, 250), 5.0), ((1024, 768), 1.0)]`` (HxW, weight)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        size, _, weight = item.partition(":")
        h, _, w = size.lower().partition("x")
        out.append(((int(h), int(w)), float(weight or 1)))
    if not out:
        raise ValueError(f"no sizes in {text!r}")
    return out


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def load_samples(folder: Path = SAMPLES) -> dict[str, np.ndarray]:
    """Person in garment A, garment B's still, the person in B (on-model), A's still: RGB arrays."""
    _check_samples(folder)
    return {k: np.asarray(Image.open(folder / name).convert("RGB")) for k, name in SAMPLE_FILES.items()}


def _resized(images: dict[str, np.ndarray], hw: tuple[int, int]) -> dict[str, np.ndarray]:
    return {k: v if v.shape[:2] == hw else np.asarray(Image.fromarray(v).resize((hw[1], hw[0]), Image.BICUBIC))
            for k, v in images.items()}


def build_payloads(sizes: list[tuple[tuple[int, int], float]],
                   folder: Path = SAMPLES) -> dict[str, list[tuple[Payload, float]]]:
    """Per ensemble, the weighted payload mix: every size as JPEG and as PNG."""
    mix: dict[str, list[tuple[Payload, float]]] = {"tryon": [], "recolor": []}
    samples = load_samples(folder)
    for hw, weight in sizes:
        images = _resized(samples, hw)
        for fmt in ("JPEG", "PNG"):
            label = f"{hw[0]}x{hw[1]} {fmt.lower()}"
            enc = {k: _encode(v, fmt) for k, v in images.items()}
            mix["tryon"].append((Payload(label, (enc["person"], enc["garment"]), hw), weight / 2))
            mix["recolor"].append((Payload(label, (enc["on_model"], enc["still"]), hw), weight / 2))
    return mix


_payloads: dict[str, list[tuple[Payload, float]]] | None = None
_payload_lock = threading.Lock()


def payloads() -> dict[str, list[tuple[Payload, float]]]:
    """Built once per process, on first use (resizing and encoding 2048x1536 takes a second)."""
    global _payloads
    with _payload_lock:
        if _payloads is None:
            _payloads = build_payloads(parse_sizes(os.environ.get("DRAPE_LOAD_SIZES", DEFAULT_SIZES)))
        return _payloads


@events.test_start.add_listener
def _warm_payloads(environment, **kw) -> None:
    """Build before the clock starts, so the first users do not measure payload building."""
    payloads()


def _ensembles() -> set[str]:
    names = {s.strip() for s in os.environ.get("DRAPE_LOAD_ENSEMBLES", "tryon,recolor").split(",") if s.strip()}
    unknown = names - set(contract.ENSEMBLES)
    if unknown:
        raise ValueError(f"DRAPE_LOAD_ENSEMBLES: unknown ensembles {sorted(unknown)}")
    return names


class _DrapeUser(User):
    """One app instance: its own connection, one request at a time, a short think time between requests."""

    abstract = True
    protocol = "grpc"
    env_var = "TRITON_GRPC_URL"
    wait_time = between(0.0, float(os.environ.get("DRAPE_LOAD_WAIT", "0.5")))

    def target(self) -> str | None:
        url = os.environ.get(self.env_var)
        if url:
            return url
        host = self.host or self.environment.host
        if not host:
            return None
        if "://" not in host:
            return host
        endpoint = Endpoint.parse(host)
        return host if endpoint.protocol == self.protocol else None

    def on_start(self) -> None:
        self.client = None
        self.enabled = sorted(_ensembles())
        url = self.target()
        if url is None:
            self._fire("setup", "no target", 0.0, 0,
                       RuntimeError(f"no {self.protocol} target: set {self.env_var}=host:port or --host "
                                    f"{self.protocol}://host:port"))
            raise StopUser()
        self.client = DrapeClient(url, None if "://" in url else self.protocol,
                                  float(os.environ.get("DRAPE_LOAD_TIMEOUT", "60")), retry=NO_RETRY)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()

    def _fire(self, request_type: str, name: str, ms: float, length: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=ms,
                                             response_length=length, exception=exc, context={})

    def _call(self, spec: contract.EnsembleSpec) -> None:
        if spec.name not in self.enabled or self.client is None:
            return
        mix = payloads()[spec.name]
        payload = random.choices([p for p, _ in mix], weights=[w for _, w in mix])[0]
        exc: BaseException | None = None
        length = 0
        start = time.perf_counter()
        try:
            outputs = self.client.infer(spec, payload.images)
            length = sum(o.nbytes for o in outputs)
            if outputs[0].shape[:2] != payload.hw:
                exc = AssertionError(f"output {outputs[0].shape} is not the input's size {payload.hw}")
        except DrapeError as e:
            exc = e
        ms = (time.perf_counter() - start) * 1000.0
        self._fire(self.protocol, f"{spec.name} {payload.label}", ms, length, exc)

    @task
    def tryon(self) -> None:
        self._call(contract.TRYON)

    @task
    def recolor(self) -> None:
        self._call(contract.RECOLOR)


class GrpcDrapeUser(_DrapeUser):
    protocol = "grpc"
    env_var = "TRITON_GRPC_URL"


class HttpDrapeUser(_DrapeUser):
    protocol = "http"
    env_var = "TRITON_HTTP_URL"
