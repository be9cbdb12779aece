"""The request-size gateway (drape_serving.gateway): the real nginx in front of the real tritonserver.

Triton 2.51 has no request-body limit; the gateway refuses bodies over ``MAX_BODY_BYTES`` (two images of
``contract.MAX_IMAGE_BYTES`` plus framing) before a byte reaches Triton. "Never reaches Triton" is observed on the
Triton side: the success + failure counts of every model (statistics extension, admin key) and the size of each
python stub's /dev/shm region. The same observations see good and at-limit requests arrive, so they can fail.

nginx is a system package (``apt-get install -y nginx``; ``.ci/run`` installs it): without it these tests skip,
saying so. Every port is picked free (``drape_serving.server.free_ports``); a ``make serve`` on 8000-8002 is left
alone.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from drape_core import contract
from drape_serving import gateway as gw
from drape_serving.server import free_ports

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "build" / "samples"
LIMIT = gw.MAX_BODY_BYTES
MIB = 1 << 20


def _nginx() -> str:
    try:
        return gw.find_nginx()
    except gw.GatewayError as exc:
        print(f"\n{exc}", file=sys.stderr)
        pytest.skip(f"nginx binary not found, the gateway cannot run: {exc}")


@pytest.fixture(scope="module")
def gateway(real_server):
    with gw.start_gateway(real_server.http_port, real_server.grpc_port, nginx=_nginx()) as handle:
        yield handle


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    person = np.fromfile(SAMPLES / "person.jpg", np.uint8)[None]
    garment = np.fromfile(SAMPLES / "garment.jpg", np.uint8)[None]
    return {"tryon": (person, garment), "recolor": (person, garment)}


# ------------------------------------------------------------------------------------------- Triton's side


def _counts_now(server) -> dict[str, tuple[int, int]]:
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/stats", headers=server.admin_headers("http"))
    with urllib.request.urlopen(req, timeout=10) as resp:
        stats = json.load(resp)["model_stats"]
    return {f"{s['name']}/{s['version']}": (int(s["inference_stats"]["success"]["count"]),
                                           int(s["inference_stats"]["fail"]["count"])) for s in stats}


def triton_counts(server, settle_s: float = 0.2, within_s: float = 10.0) -> dict[str, tuple[int, int]]:
    """{model: (success, fail)} for every model Triton serves, from the statistics extension (admin key), once
    they hold still for ``settle_s``. Triton counts a request when it releases it, which can be just after the
    client has the response: read at once, the counts can miss the request just answered and then show it in the
    next read (a CI run saw an ensemble's success count rise by 2 over one request, 2026-11-25)."""
    counts, deadline = _counts_now(server), time.monotonic() + within_s
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        again = _counts_now(server)
        if again == counts:
            return counts
        counts = again
    raise AssertionError(f"Triton's counts did not settle within {within_s} s: is something else sending requests?")


def shm_regions(server) -> dict[str, tuple[int, int]]:
    """{region: (size, allocated bytes)} of the server's python-backend shared memory in /dev/shm."""
    prefix = next(a.split("shm-region-prefix-name=", 1)[1] for a in server.command if "shm-region-prefix-name=" in a)
    out = {}
    for region in Path("/dev/shm").glob(prefix + "*"):
        st = region.stat()
        out[region.name] = (st.st_size, st.st_blocks * 512)
    assert out, f"no /dev/shm regions with prefix {prefix}"
    return out


# ---------------------------------------------------------------------------------------------- requests


def _inputs(module, spec: contract.EnsembleSpec, arrays) -> list:
    inputs = []
    for name, data in zip(spec.input_names, arrays):
        tensor = module.InferInput(name, list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def infer(protocol: str, url: str, spec: contract.EnsembleSpec, arrays) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = grpcclient if protocol == "grpc" else httpclient
    kw = {"network_timeout": 120.0, "connection_timeout": 30.0} if protocol == "http" else {}
    client = module.InferenceServerClient(url, **kw)
    try:
        result = client.infer(spec.name, _inputs(module, spec, arrays))
        return {name: result.as_numpy(name) for name in spec.output_names}
    finally:
        client.close()


def refused(protocol: str, url: str, arrays) -> tuple[str, str, float]:
    """(status, message, seconds) of a tryon request expected to fail."""
    from tritonclient.utils import InferenceServerException

    start = time.perf_counter()
    with pytest.raises(InferenceServerException) as info:
        infer(protocol, url, contract.TRYON, arrays)
    return str(info.value.status()), str(info.value.message()), time.perf_counter() - start


def kserve_header(total: int, person: int = contract.MAX_IMAGE_BYTES) -> bytes:
    """The JSON header of a KServe binary tryon request whose whole body is exactly ``total`` bytes: a ``person``
    byte person image and a garment image taking the rest (zero-filled: a real request, not an image)."""
    def header(garment: int) -> bytes:
        return json.dumps({"inputs": [
            {"name": "person_image", "shape": [1, person], "datatype": "UINT8",
             "parameters": {"binary_data_size": person}},
            {"name": "garment_image", "shape": [1, garment], "datatype": "UINT8",
             "parameters": {"binary_data_size": garment}}]}, separators=(",", ":")).encode()
    garment = total - person - len(header(0))
    while len(header(garment)) + person + garment != total:  # the garment size's digits count too
        garment = total - person - len(header(garment))
    return header(garment)


def http_body_of_size(total: int) -> tuple[bytes, int]:
    """A KServe binary tryon request body of exactly ``total`` bytes and its JSON header length."""
    head = kserve_header(total)
    return head + bytes(total - len(head)), len(head)


def http_post(port: int, body: bytes, header_len: int) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v2/models/tryon/infer", body=body,
                     headers={"Inference-Header-Content-Length": str(header_len),
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_http_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers + Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def grpc_request_of_size(total: int):
    """A ModelInferRequest whose gRPC body (5-byte message prefix + protobuf) is exactly ``total`` bytes."""
    from tritonclient.grpc import service_pb2

    def build(garment: int):
        req = service_pb2.ModelInferRequest(model_name="tryon")
        for name, n in (("person_image", contract.MAX_IMAGE_BYTES), ("garment_image", garment)):
            t = req.inputs.add()
            t.name, t.datatype = name, "UINT8"
            t.shape.extend([1, n])
            req.raw_input_contents.append(bytes(n))
        return req

    garment = total - contract.MAX_IMAGE_BYTES - 5 - build(0).ByteSize()
    for _ in range(10):  # varint lengths shift by a byte or two: converge
        size = 5 + build(garment).ByteSize()
        if size == total:
            return build(garment)
        garment += total - size
    raise AssertionError(f"no request of exactly {total} bytes")


def grpc_call(port: int, request) -> tuple[str, str]:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
            return "OK", ""
        except grpc.RpcError as exc:
            return str(exc.code()), exc.details() or ""


# ------------------------------------------------------------------------------------------ no server needed


def test_limit_is_derived_from_the_contract_and_the_k8s_config_is_the_rendered_one():
    """The configured client_max_body_size is exactly two contract images plus framing, in the file Kubernetes
    ships too: editing MAX_IMAGE_BYTES without regenerating k8s/base/gateway/nginx.conf fails here."""
    assert gw.IMAGES_PER_REQUEST == 2 == max(len(s.inputs) for s in contract.ENSEMBLES.values())
    assert gw.MAX_BODY_BYTES == 2 * contract.MAX_IMAGE_BYTES + gw.FRAMING_BYTES
    # framing headroom is small: a third image (or one of twice the limit) cannot fit
    assert 0 < gw.FRAMING_BYTES < contract.MAX_IMAGE_BYTES
    text = gw.K8S_CONFIG.read_text()
    assert text == gw.render_k8s(), "regenerate: python -m drape_serving.gateway k8s > k8s/base/gateway/nginx.conf"
    assert gw.configured_limit(text) == gw.MAX_BODY_BYTES
    assert gw.configured_limit(gw.render(gw.GatewaySettings("1", "2", "h:3", "h:4"))) == gw.MAX_BODY_BYTES
    # What refused clients read: HTTP 413 with Triton's JSON error shape, gRPC INVALID_ARGUMENT; both name the limit.
    body = re.search(r"location @too_large \{\s*default_type application/json;\s*return 413 '(.*)';", text).group(1)
    assert set(json.loads(body)) == {"error"} and str(gw.MAX_BODY_BYTES) in json.loads(body)["error"]
    grpc_block = text.split("listen 8081 http2;", 1)[1]
    assert f"add_header grpc-status {gw.GRPC_INVALID_ARGUMENT} always;" in grpc_block.split("location @unavailable")[0]
    assert f'add_header grpc-message "{gw.limit_message()}" always;' in grpc_block
    with pytest.raises(ValueError):
        gw.configured_limit(text.replace("client_max_body_size", "#"))


def test_request_framing_fits_the_headroom():
    """A pair of maximum-size images plus tritonclient's own request framing (KServe JSON header, protobuf) stays
    under the limit, with the framing a tiny part of FRAMING_BYTES: legitimate requests are never refused."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.grpc import _utils as grpc_utils

    big = np.zeros((1, contract.MAX_IMAGE_BYTES), np.uint8)
    for spec in contract.ENSEMBLES.values():
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            _inputs(httpclient, spec, (big, big)), outputs=[httpclient.InferRequestedOutput(n) for n in spec.output_names])
        assert len(body) - 2 * contract.MAX_IMAGE_BYTES == json_size < gw.FRAMING_BYTES / 100
        request = grpc_utils._get_inference_request(  # what tritonclient.grpc sends
            model_name=spec.name, inputs=_inputs(grpcclient, spec, (big, big)), model_version="", request_id="",
            outputs=None, sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
            parameters=None)
        assert 5 + request.ByteSize() - 2 * contract.MAX_IMAGE_BYTES < gw.FRAMING_BYTES / 100


def test_nginx_accepts_the_k8s_config(tmp_path):
    """`nginx -t` on the exact file the sidecar mounts (prefix-relative paths, so any prefix works)."""
    out = subprocess.run([_nginx(), "-t", "-p", f"{tmp_path}/", "-c", str(gw.K8S_CONFIG), "-e", "stderr"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_missing_nginx_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(gw, "_NGINX_DIRS", ())
    with pytest.raises(gw.GatewayError, match=r"apt-get install -y nginx"):
        gw.find_nginx()
    # drape-serve --gateway says so before loading any model
    code = ("import sys, drape_serving.gateway as g; g._NGINX_DIRS = (); from drape_serving.server import main; "
            "sys.exit(main(['--model-repository', '/nonexistent', '--gateway']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": "/nonexistent"})
    assert out.returncode == 1 and "apt-get install -y nginx" in out.stderr, out.stderr
    assert "starting tritonserver" not in out.stderr


def test_triton_unreachable_is_reported_as_retryable_unavailable():
    """Triton restarting / not listening yet: HTTP 503 and gRPC UNAVAILABLE (what the client retries), not 502."""
    from drape_client.errors import UnavailableError, classify

    dead_http, dead_grpc = free_ports(2)
    with gw.start_gateway(dead_http, dead_grpc, nginx=_nginx()) as g:
        big = np.zeros((1, 10), np.uint8)
        for protocol, url, status in (("http", g.http_url, "503"), ("grpc", g.grpc_url, "StatusCode.UNAVAILABLE")):
            from tritonclient.utils import InferenceServerException

            with pytest.raises(InferenceServerException) as info:
                infer(protocol, url, contract.TRYON, (big, big))
            assert str(info.value.status()) == status, (protocol, info.value)
            assert "Triton is unavailable" in info.value.message()
            kind, _, _, retryable = classify(info.value)
            assert kind is UnavailableError and retryable


# ------------------------------------------------------------------------------------------- real server


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_good_requests_through_the_gateway_equal_direct(real_server, gateway, pairs, protocol):
    """(a) tryon and recolor through the gateway give the very same arrays as direct to Triton, and arrive there
    (Triton counts each as one more success: the counters used below do see requests)."""
    direct = real_server.grpc_url if protocol == "grpc" else real_server.http_url
    via = gateway.grpc_url if protocol == "grpc" else gateway.http_url
    for spec in contract.ENSEMBLES.values():
        expected = infer(protocol, direct, spec, pairs[spec.name])
        before = triton_counts(real_server)
        got = infer(protocol, via, spec, pairs[spec.name])
        after = triton_counts(real_server)
        for name in spec.output_names:
            assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name
        ensemble = next(k for k in after if k.startswith(f"{spec.name}/"))
        assert after[ensemble][0] == before[ensemble][0] + 1, (before[ensemble], after[ensemble])


@pytest.mark.server
def test_oversized_requests_are_refused_quickly_and_never_reach_triton(real_server, gateway, pairs):
    """(b) twice the limit over gRPC and HTTP, and 300 MiB over HTTP with Content-Length: refused by the gateway
    with INVALID_ARGUMENT / 413 naming the limit, Triton's counters and stub shm regions unchanged; (c) the next
    good request works on both protocols."""
    counts, regions = triton_counts(real_server), shm_regions(real_server)
    twice = np.zeros((1, LIMIT), np.uint8)  # two of them: a body of 2 x LIMIT + framing
    timings = {}
    for protocol, url, status in (("grpc", gateway.grpc_url, "StatusCode.INVALID_ARGUMENT"),
                                  ("http", gateway.http_url, "413")):
        got, message, seconds = refused(protocol, url, (twice, twice))
        assert got == status, (protocol, got, message)
        assert f"limit of {LIMIT} bytes" in message and "drape gateway" in message, message
        timings[f"{protocol} 2x"] = seconds
    del twice

    # 300 MiB over HTTP with Content-Length, a well-formed tryon request (a 284 MiB person image; direct to Triton
    # it grows the preprocess stub's shm region to ~416 MiB, RELIABILITY.md): the 413 arrives right after the
    # request headers, before any of the body is sent; the body, sent anyway, is read and dropped by nginx.
    size = 300 * MIB
    head = kserve_header(size, person=size - 16 * MIB)
    with socket.create_connection((gateway.host, gateway.http_port), timeout=30) as sock:
        start = time.perf_counter()
        sock.sendall(f"POST /v2/models/tryon/infer HTTP/1.1\r\nHost: drape\r\nContent-Type: application/octet-stream"
                     f"\r\nInference-Header-Content-Length: {len(head)}\r\nContent-Length: {size}\r\n\r\n".encode())
        sock.settimeout(10)
        try:
            answer = read_http_response(sock)
        except socket.timeout:
            pytest.fail("no answer within 10 s to the headers of a 300 MiB request: the gateway waits for its body")
        timings["http 300 MiB, headers only"] = time.perf_counter() - start
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"Content-Type: application/json" in rest
        error = json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
        assert f"limit of {LIMIT} bytes" in error
        chunk, sent = bytes(MIB), 0
        try:
            sock.sendall(head)
            sent = len(head)
            while sent < size:
                sent += sock.send(chunk[: size - sent])
        except OSError:  # nginx may stop reading (lingering close): either way nothing is forwarded
            pass
        timings["http 300 MiB, whole body"] = time.perf_counter() - start

    assert triton_counts(real_server) == counts, "an oversized request reached Triton"
    assert shm_regions(real_server) == regions, "a python stub's shared memory changed"
    print("\nrefusal seconds:", {k: round(v, 3) for k, v in timings.items()})
    assert timings["http 300 MiB, headers only"] < 2.0
    assert max(timings.values()) < 20.0, timings

    # (c) the next good request, both protocols, through the gateway
    for protocol, url in (("grpc", gateway.grpc_url), ("http", gateway.http_url)):
        out = infer(protocol, url, contract.TRYON, pairs["tryon"])["tryon_image"]
        assert out.shape[-1] == 3 and out.dtype == np.uint8


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_body_at_the_limit_reaches_triton_and_one_byte_more_does_not(real_server, gateway, protocol):
    """(d) exactly LIMIT bytes pass the gateway and Triton's own validation answers (INVALID_ARGUMENT naming the
    input: zero bytes are not an image) and counts the failure; LIMIT + 1 bytes never arrive."""
    port = gateway.grpc_port if protocol == "grpc" else gateway.http_port
    for size, reaches in ((LIMIT, True), (LIMIT + 1, False)):
        before = triton_counts(real_server)
        if protocol == "grpc":
            status, message = grpc_call(port, grpc_request_of_size(size))
            assert status == "StatusCode.INVALID_ARGUMENT", (size, status, message)
        else:
            body, header_len = http_body_of_size(size)
            code, raw = http_post(port, body, header_len)
            status, message = str(code), json.loads(raw)["error"]
            assert status == ("400" if reaches else "413"), (size, status, message)
        after = triton_counts(real_server)
        if reaches:
            assert message.startswith("in ensemble 'tryon', person_image: "), message
            tryon = next(k for k in after if k.startswith("tryon/"))
            # Triton 2.51 adds 2 to an ensemble's fail count per failed request; any increase proves arrival.
            assert after[tryon][1] > before[tryon][1], (before[tryon], after[tryon])
        else:
            assert f"limit of {LIMIT} bytes" in message, message
            assert after == before, "a body one byte over the limit reached Triton"


@pytest.mark.server
def test_grpc_streaming_is_refused_at_once_not_held(real_server, gateway, pairs):
    """ModelStreamInfer through the gateway: UNIMPLEMENTED with a message, immediately (nginx would otherwise
    hold the stream's messages until the client closed it); Triton sees nothing."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="tryon")
    for name, data in zip(contract.TRYON.input_names, pairs["tryon"]):
        t = request.inputs.add()
        t.name, t.datatype = name, "UINT8"
        t.shape.extend(data.shape)
        request.raw_input_contents.append(data.tobytes())
    before = triton_counts(real_server)

    closed = threading.Event()

    def messages():  # the stream stays open: a held stream would time out below instead of failing at once
        yield request
        closed.wait(30)

    start = time.perf_counter()
    try:
        with grpc.insecure_channel(gateway.grpc_url) as channel:
            with pytest.raises(grpc.RpcError) as info:
                for _ in service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(messages(), timeout=20):
                    pass
    finally:
        closed.set()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value
    assert "use ModelInfer" in info.value.details()
    assert time.perf_counter() - start < 10
    assert triton_counts(real_server) == before


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_drape_client_works_unchanged_through_the_gateway(real_server, gateway, protocol):
    """(e) the thin client, pointed at the gateway's URL, answers exactly as it does pointed at Triton."""
    from drape_client import DrapeClient

    person, garment = SAMPLES / "person.jpg", SAMPLES / "garment.jpg"
    urls = {"direct": real_server.grpc_url if protocol == "grpc" else real_server.http_url,
            "gateway": gateway.grpc_url if protocol == "grpc" else gateway.http_url}
    answers = {}
    for where, url in urls.items():
        with DrapeClient(f"{protocol}://{url}", timeout_s=120) as client:
            assert client.ready()
            assert set(client.model_versions()) >= {"tryon", "recolor"}
            image, mask = client.recolor(person, garment)
            answers[where] = (client.tryon(person, garment), image, mask)
    for got, expected in zip(answers["gateway"], answers["direct"]):
        assert np.array_equal(got, expected)


@pytest.mark.server
def test_bad_inputs_transport_probe_through_the_gateway(real_server, gateway):
    """`python -m tests.reliability.bad_inputs run --transport-via gateway`: its transport payloads go through the
    gateway and count as passed only when refused with the limit message and no shm region grew."""
    from tests.reliability import bad_inputs

    target = bad_inputs.Target(real_server.http_url, real_server.grpc_url, real_server.process.pid)
    clients, via = bad_inputs.Clients(target), bad_inputs.Clients(bad_inputs.Target(gateway.http_url, gateway.grpc_url))
    try:
        probe = bad_inputs.size_limit_probe(clients, bad_inputs.ServerWatch(target.server_pid, None),
                                            bad_inputs.Pool(7), (40,), gateway=via, direct_transport=False)
    finally:
        clients.close()
        via.close()
    rows = probe["transport"]
    assert [(r["route"], r["protocol"]) for r in rows] == [("gateway", "grpc"), ("gateway", "http")]
    assert all(r["refused_by_gateway"] and not r["shm_regions_grown_mib"] for r in rows), rows
    report = bad_inputs.Report([], [], {}, {}, True, [], {}, {}, {}, {}, size_probe=probe)
    assert report.passed
    rows[0]["refused_by_gateway"] = False  # what a gateway that let it through would record
    assert not report.passed


@pytest.mark.server
def test_drape_serve_gateway_runs_nginx_in_front_of_triton_and_stops_both(cpu_repo, tmp_path):
    """`drape-serve --gateway`: the printed HTTP/gRPC ports are nginx's, Triton listens on loopback elsewhere,
    the thin client works through them, and Ctrl-C stops nginx and tritonserver (exit 0)."""
    from drape_client import DrapeClient

    _nginx()
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drape_serving.server", "--model-repository", str(cpu_repo),
                                 "--gateway", "--address", "127.0.0.1", "--http-port", str(http_port),
                                 "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "drape-serve: ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert f"HTTP 127.0.0.1:{http_port}  gRPC 127.0.0.1:{grpc_port}" in text
        m = re.search(r"request-size gateway.*\(Triton itself: HTTP 127\.0\.0\.1:(\d+), gRPC 127\.0\.0\.1:(\d+), "
                      r"loopback only\)", text)
        assert m and {int(m.group(1)), int(m.group(2))}.isdisjoint({http_port, grpc_port}), text[-2000:]
        with DrapeClient(f"127.0.0.1:{grpc_port}", timeout_s=120) as client:
            assert client.tryon(SAMPLES / "person.jpg", SAMPLES / "garment.jpg").ndim == 3
        with DrapeClient(f"http://127.0.0.1:{http_port}", timeout_s=120) as client:
            assert client.ready()
        assert b"nv_inference_request_success" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
        nginx_pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_child_nginx(p, proc.pid)]
        assert nginx_pids, "no nginx child of drape-serve"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    assert code == 0, log.read_text()[-2000:]
    assert not [p for p in nginx_pids if Path(f"/proc/{p}").exists()], "nginx outlived drape-serve"
    for port in (http_port, grpc_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _is_child_nginx(proc_dir: Path, parent: int) -> bool:
    try:
        stat = (proc_dir / "stat").read_text()
        return int(stat[stat.rfind(")") + 2:].split()[1]) == parent and (proc_dir / "comm").read_text().strip() == "nginx"
    except (OSError, ValueError, IndexError):
        return False
