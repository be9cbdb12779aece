"""The thin client: inputs, errors, retries, timeouts and TLS against real servers.

Behaviour that needs the real networks (outputs, input types, async, threads, metadata) runs against the trained
repository on a real tritonserver (`real_server`). Retries, timeouts and TLS need a server that answers
UNAVAILABLE, stalls or presents a certificate on demand: those are real gRPC (grpcio with Triton's own service
definition) and HTTP (http.server) servers on loopback, scripted per test, never a stand-in for the client.
"""
from __future__ import annotations

import asyncio
import io
import json
import random
import ssl
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drape_core import contract
from drape_runtime.codec import decode_image

grpc = pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

from drape_client import (  # noqa: E402
    NO_RETRY,
    AsyncDrapeClient,
    BadInputError,
    DrapeClient,
    Endpoint,
    Recolored,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    UnavailableError,
    describe,
    encode,
    served_models,
)
from drape_client.errors import classify  # noqa: E402

FAST_RETRY = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)


def _render(seed: int, hw=(300, 220)):
    from drape_train.data.synth import render_pair

    a, b = render_pair(seed, *hw)
    return a, b


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


A, B = _render(11)
PERSON, GARMENT = A.image, B.cloth          # uint8 300x220x3
PERSON_JPEG, GARMENT_JPEG = _jpeg(PERSON), _jpeg(GARMENT)


# ----------------------------------------------------------------------------------- no server


def test_import_pulls_in_no_torch():
    """Apps install the client without torch: importing it (and opening both transports) must not import torch."""
    code = (
        "import sys, drape_client, drape_client.batch, drape_client.__main__\n"
        "from drape_client import DrapeClient, AsyncDrapeClient\n"
        "DrapeClient('localhost:1', 'grpc').close(); DrapeClient('localhost:1', 'http').close()\n"
        "AsyncDrapeClient('localhost:1', 'grpc'); AsyncDrapeClient('localhost:1', 'http')\n"
        "assert 'tritonclient.grpc' in sys.modules and 'tritonclient.http.aio' in sys.modules\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("url, protocol, expected", [
    ("localhost:8001", None, ("grpc", "localhost:8001", False)),
    ("localhost:8000", "http", ("http", "localhost:8000", False)),
    ("grpc://host:1", None, ("grpc", "host:1", False)),
    ("grpcs://host:443", None, ("grpc", "host:443", True)),
    ("http://host:8000/", None, ("http", "host:8000", False)),
    ("https://host/triton", "http", ("http", "host/triton", True)),
])
def test_endpoint_parse(url, protocol, expected):
    e = Endpoint.parse(url, protocol)
    assert (e.protocol, e.address, e.tls) == expected


@pytest.mark.parametrize("url, protocol", [("https://h:1", "grpc"), ("ftp://h:1", None), ("grpc://", None),
                                           ("h:1", "udp")])
def test_endpoint_rejects(url, protocol):
    with pytest.raises(ValueError):
        Endpoint.parse(url, protocol)


def test_encode_every_image_kind_round_trips(tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(PERSON_JPEG)
    assert encode(path, "x") == PERSON_JPEG and encode(str(path), "x") == PERSON_JPEG
    assert encode(bytearray(PERSON_JPEG), "x") == PERSON_JPEG
    assert np.array_equal(decode_image(encode(PERSON, "x"), "x"), PERSON)               # numpy RGB, lossless
    assert np.array_equal(decode_image(encode(Image.fromarray(PERSON), "x"), "x"), PERSON)
    gray = PERSON[:, :, 0]
    assert np.array_equal(decode_image(encode(gray[:, :, None], "x"), "x"), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.dstack([PERSON, np.full(PERSON.shape[:2], 255, np.uint8)])
    assert np.array_equal(decode_image(encode(rgba, "x"), "x"), PERSON)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), 3.5,
                                 "/nonexistent/person.jpg"])
def test_encode_rejects_naming_the_input(bad):
    with pytest.raises(BadInputError, match="^person_image: ") as info:
        encode(bad, "person_image")
    assert info.value.input_name == "person_image"


def test_oversize_payload_is_refused_before_any_network_io():
    """The server would refuse it as well, but only after buffering it all (Triton 2.51 has no body limit)."""
    big = b"\xff\xd8" + bytes(contract.MAX_IMAGE_BYTES)
    with DrapeClient("127.0.0.1:1", retry=FAST_RETRY) as c:      # nothing listens there: no request is made
        with pytest.raises(BadInputError, match="garment_image: encoded image is .* over the") as info:
            c.tryon(PERSON_JPEG, big)
    assert info.value.input_name == "garment_image" and info.value.attempts in (0, 1, None)


def test_describe_names_inputs():
    assert describe("a/b.jpg") == "a/b.jpg"
    assert describe(b"123") == "<3 bytes>"
    assert describe(PERSON) == "<ndarray uint8 300x220x3>"
    assert describe(Image.fromarray(PERSON)) == "<PIL RGB 220x300>"


def test_backoff_is_capped_exponential_with_full_jitter():
    policy = RetryPolicy(attempts=6, base_s=0.1, cap_s=0.5)
    rng = random.Random(0)
    for retry in range(6):
        waits = [policy.backoff_s(retry, rng) for _ in range(200)]
        bound = min(0.5, 0.1 * 2 ** retry)
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > 0.8 * bound and min(waits) < 0.2 * bound  # jitter spans the window
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_classify_statuses():
    from tritonclient.utils import InferenceServerException as E

    def kind(exc):
        cls, _, _, retry = classify(exc)
        return cls, retry

    assert kind(E("person_image: bad", status="StatusCode.INVALID_ARGUMENT")) == (BadInputError, False)
    assert kind(E("bad", status="400")) == (BadInputError, False)
    assert kind(E("busy", status="StatusCode.UNAVAILABLE")) == (UnavailableError, True)
    assert kind(E("full", status="StatusCode.RESOURCE_EXHAUSTED")) == (UnavailableError, True)
    assert kind(E("busy", status="503")) == (UnavailableError, True)
    assert kind(E("slow down", status="429")) == (UnavailableError, True)
    assert kind(E("late", status="StatusCode.DEADLINE_EXCEEDED")) == (RequestTimeoutError, False)
    assert kind(E("boom", status="StatusCode.INTERNAL")) == (ServerError, False)
    assert kind(E("boom", status="500")) == (ServerError, False)
    assert kind(ConnectionRefusedError(111, "refused")) == (UnavailableError, True)
    assert kind(TimeoutError("t")) == (RequestTimeoutError, False)
    assert kind(E("failed to connect: Ssl handshake failed: CERTIFICATE_VERIFY_FAILED",
                  status="StatusCode.UNAVAILABLE")) == (UnavailableError, False)


def test_served_models_cover_both_ensembles():
    names = served_models()
    for spec in contract.ENSEMBLES.values():
        assert {spec.name, spec.preprocess_model, spec.postprocess_model, *spec.networks} <= set(names)
    assert len(names) == len(set(names))


# ---------------------------------------------------------------------------------- real triton


def _url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tryon_and_recolor_accept_every_image_kind(real_server, protocol, tmp_path):
    path = tmp_path / "person.jpg"
    path.write_bytes(PERSON_JPEG)
    with DrapeClient(_url(real_server, protocol), protocol, 120) as c:
        outs = [c.tryon(path, GARMENT_JPEG), c.tryon(PERSON_JPEG, GARMENT), c.tryon(Image.fromarray(PERSON), str(path))]
        for out in outs:
            assert out.dtype == np.uint8 and out.shape == (300, 220, 3)
        # JPEG bytes and the path to the same bytes are the same request: the same answer.
        assert np.array_equal(outs[0], c.tryon(PERSON_JPEG, GARMENT_JPEG))
        result = c.recolor(PERSON, GARMENT_JPEG)
        assert isinstance(result, Recolored)
        image, mask = result
        assert image.shape == (300, 220, 3) and mask.shape == (300, 220)
        assert set(np.unique(mask)) <= {0, 255}


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_input_is_named_and_not_retried(real_server, protocol, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"definitely not a jpeg")
    with DrapeClient(_url(real_server, protocol), protocol, 60, retry=FAST_RETRY) as c:
        with pytest.raises(BadInputError) as info:
            c.tryon(PERSON_JPEG, junk)
        err = info.value
        assert err.input_name == "garment_image" and err.attempts == 1
        assert str(junk) in str(err) and "garment_image: " in str(err)
        assert err.status in ("StatusCode.INVALID_ARGUMENT", "400")
        with pytest.raises(BadInputError, match="on_model_image: empty input"):
            c.recolor(b"", GARMENT_JPEG)
        assert c.ready()


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_concurrent_calls_and_metadata(real_server, protocol):
    async def go():
        async with AsyncDrapeClient(_url(real_server, protocol), protocol, 120) as c:
            assert await c.ready() and await c.live()
            results = await asyncio.gather(c.tryon(PERSON_JPEG, GARMENT_JPEG), c.recolor(PERSON, GARMENT),
                                           c.tryon(PERSON, GARMENT_JPEG))
            with pytest.raises(BadInputError) as info:
                await c.recolor(PERSON, b"\x89PNG\r\n\x1a\n truncated")
            return results, await c.model_versions(), await c.server_metadata(), info.value

    (t1, (image, mask), t2), versions, meta, err = asyncio.run(go())
    assert t1.shape == t2.shape == image.shape == (300, 220, 3) and mask.shape == (300, 220)
    assert err.input_name == "still_image"
    assert set(versions) == set(served_models())
    assert all(len(v) == 1 and v[0].isdigit() for v in versions.values())  # latest-version policy: one each
    assert meta["name"] == "triton"


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sync_client_metadata(real_server, protocol):
    with DrapeClient(_url(real_server, protocol), protocol) as c:
        assert c.live() and c.ready()
        assert not c.ready(models=["no_such_model"])
        models = {m.name: m for m in c.models()}
        assert models["tryon"].platform == "ensemble" and models["tryon"].ready
        assert len(models["gmm"].versions) == 1 and models["gmm"].versions[0].isdigit()
        assert c.model_versions(["gmm"]) == {"gmm": list(models["gmm"].versions)}
        with pytest.raises(ServerError):
            c.model("no_such_model")


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_one_client_shared_by_threads(real_server, protocol):
    """One client per process is the intended use; over HTTP each thread gets its own connection."""
    with DrapeClient(_url(real_server, protocol), protocol, 120) as c:
        def work(i):
            return c.tryon(PERSON if i % 2 else PERSON_JPEG, GARMENT_JPEG).shape
        with futures.ThreadPoolExecutor(4) as pool:
            shapes = list(pool.map(work, range(8)))
    assert shapes == [(300, 220, 3)] * 8


# ------------------------------------------------------------------------ scripted gRPC server


class _ScriptedGrpc(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC service answering ModelInfer from a script: (status code, message) or ("sleep", s)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=True)

    def ModelInfer(self, request, context):
        self.calls += 1
        action, arg = self.script[min(self.calls, len(self.script)) - 1]
        if action == "sleep":
            time.sleep(arg)
            context.abort(grpc.StatusCode.INTERNAL, "slept")
        context.abort(action, arg)


def _grpc_server(script, credentials=None):
    servicer = _ScriptedGrpc(script)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    address = "localhost:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, servicer, port


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_grpc_retries_only_retryable_statuses(code):
    server, servicer, port = _grpc_server([(code, "busy"), (code, "busy"),
                                           (grpc.StatusCode.INVALID_ARGUMENT, "garment_image: nope")])
    try:
        with DrapeClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as c:
            with pytest.raises(BadInputError) as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
        assert servicer.calls == 3 and info.value.attempts == 3 and info.value.input_name == "garment_image"
    finally:
        server.stop(0)


def test_grpc_gives_up_after_the_policy_and_never_retries_server_faults():
    server, servicer, port = _grpc_server([(grpc.StatusCode.UNAVAILABLE, "draining")])
    try:
        with DrapeClient(f"grpc://127.0.0.1:{port}", retry=FAST_RETRY) as c:
            with pytest.raises(UnavailableError, match="draining") as info:
                c.recolor(PERSON_JPEG, GARMENT_JPEG)
        assert servicer.calls == 3 and info.value.attempts == 3
    finally:
        server.stop(0)
    server, servicer, port = _grpc_server([(grpc.StatusCode.INTERNAL, "model crashed")])
    try:
        with DrapeClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as c:
            with pytest.raises(ServerError, match="model crashed") as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
        assert not isinstance(info.value, UnavailableError)
        assert servicer.calls == 1 and info.value.attempts == 1
    finally:
        server.stop(0)


def test_grpc_timeout_is_a_timeout_and_not_retried():
    server, servicer, port = _grpc_server([("sleep", 2.0)])
    try:
        with DrapeClient(f"127.0.0.1:{port}", timeout_s=0.3, retry=FAST_RETRY) as c:
            with pytest.raises(RequestTimeoutError) as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
            assert isinstance(info.value, TimeoutError) and info.value.attempts == 1
        assert servicer.calls == 1

        async def go():
            async with AsyncDrapeClient(f"127.0.0.1:{port}", timeout_s=0.3, retry=FAST_RETRY) as c:
                await c.tryon(PERSON_JPEG, GARMENT_JPEG)

        with pytest.raises(RequestTimeoutError):
            asyncio.run(go())
    finally:
        server.stop(0)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_refused_connection_is_retried_then_unavailable(protocol):
    from drape_serving.server import free_port

    port = free_port()
    with DrapeClient(f"127.0.0.1:{port}", protocol, 5, retry=FAST_RETRY) as c:
        with pytest.raises(UnavailableError) as info:
            c.tryon(PERSON_JPEG, GARMENT_JPEG)
        assert info.value.attempts == 3
        assert not c.ready()

    async def go():
        async with AsyncDrapeClient(f"127.0.0.1:{port}", protocol, 5, retry=FAST_RETRY) as c:
            await c.recolor(PERSON_JPEG, GARMENT_JPEG)

    with pytest.raises(UnavailableError) as info:
        asyncio.run(go())
    assert info.value.attempts == 3


# ------------------------------------------------------------------------ scripted HTTP server


def _http_server(script, ssl_context=None):
    """KServe-shaped HTTP server: health endpoints answer 200; infer answers from script (status, error)."""
    calls = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append(self.path)
            status, arg = script[min(len(calls), len(script)) - 1]
            if status == "sleep":
                time.sleep(arg)
                status, arg = 500, "slept"
            self._send(status, json.dumps({"error": arg}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


@pytest.mark.parametrize("status", [503, 429])
def test_http_retries_503_and_429_only(status):
    server, calls = _http_server([(status, "busy"), (status, "busy"), (400, "in ensemble 'tryon', person_image: bad")])
    try:
        with DrapeClient(f"http://127.0.0.1:{server.server_port}", timeout_s=10, retry=FAST_RETRY) as c:
            with pytest.raises(BadInputError) as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
        assert len(calls) == 3 and info.value.attempts == 3 and info.value.input_name == "person_image"
        assert calls[0] == "/v2/models/tryon/infer"
    finally:
        server.shutdown()


def test_http_server_fault_and_async_retries():
    server, calls = _http_server([(500, "model crashed")])
    try:
        with DrapeClient(f"http://127.0.0.1:{server.server_port}", timeout_s=10, retry=FAST_RETRY) as c:
            with pytest.raises(ServerError, match="model crashed") as info:
                c.recolor(PERSON_JPEG, GARMENT_JPEG)
        assert len(calls) == 1 and info.value.status == "500"
    finally:
        server.shutdown()
    server, calls = _http_server([(503, "busy"), (400, "still_image: bad")])
    try:
        async def go():
            async with AsyncDrapeClient(f"http://127.0.0.1:{server.server_port}", retry=FAST_RETRY) as c:
                await c.recolor(PERSON_JPEG, GARMENT_JPEG)

        with pytest.raises(BadInputError) as info:
            asyncio.run(go())
        assert len(calls) == 2 and info.value.attempts == 2 and info.value.input_name == "still_image"
    finally:
        server.shutdown()


def test_http_timeout_is_a_timeout_and_the_connection_recovers():
    server, calls = _http_server([("sleep", 1.5), (400, "person_image: second call answered")])
    try:
        with DrapeClient(f"http://127.0.0.1:{server.server_port}", timeout_s=0.3, retry=FAST_RETRY) as c:
            with pytest.raises(RequestTimeoutError) as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
            assert info.value.attempts == 1
            with pytest.raises(BadInputError, match="second call answered"):  # a fresh connection, not the stuck one
                c.tryon(PERSON_JPEG, GARMENT_JPEG, timeout_s=5)
        assert len(calls) == 2
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (its own CA), made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def test_https_verifies_the_certificate(certificate):
    cert, key = certificate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server, calls = _http_server([(400, "person_image: reached over TLS")], ctx)
    url = f"https://localhost:{server.server_port}"
    try:
        with DrapeClient(url, timeout_s=5, retry=FAST_RETRY) as c:   # untrusted self-signed certificate
            assert not c.ready()
            with pytest.raises(UnavailableError, match="TLS") as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
            assert info.value.attempts == 1                              # a bad certificate is not retried
        assert calls == []
        with DrapeClient(url, timeout_s=5, ca_certs=str(cert)) as c:     # trusted: requests go through
            assert c.ready()
            with pytest.raises(BadInputError, match="reached over TLS"):
                c.tryon(PERSON_JPEG, GARMENT_JPEG)

        async def go(ca):
            async with AsyncDrapeClient(url, timeout_s=5, retry=FAST_RETRY, ca_certs=ca) as c:
                return await c.ready()

        assert asyncio.run(go(str(cert))) and not asyncio.run(go(None))
        with DrapeClient(f"http://localhost:{server.server_port}", timeout_s=5, retry=NO_RETRY) as c:
            assert not c.ready()                                          # plaintext to a TLS port fails
    finally:
        server.shutdown()


def test_grpcs_verifies_the_certificate(certificate):
    cert, key = certificate
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, servicer, port = _grpc_server([(grpc.StatusCode.INVALID_ARGUMENT, "person_image: reached over TLS")],
                                          creds)
    url = f"grpcs://localhost:{port}"
    try:
        with DrapeClient(url, timeout_s=5, retry=FAST_RETRY) as c:
            assert not c.ready()
            with pytest.raises(UnavailableError) as info:
                c.tryon(PERSON_JPEG, GARMENT_JPEG)
            assert info.value.attempts == 1
        assert servicer.calls == 0
        with DrapeClient(url, timeout_s=5, ca_certs=str(cert)) as c:
            assert c.ready()
            with pytest.raises(BadInputError, match="reached over TLS"):
                c.tryon(PERSON_JPEG, GARMENT_JPEG)

        async def go():
            async with AsyncDrapeClient(url, timeout_s=5, ca_certs=str(cert)) as c:
                return await c.ready()

        assert asyncio.run(go())
    finally:
        server.stop(0)
