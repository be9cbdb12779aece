"""The thin client verifies TLS when given grpcs:// or https:// URLs, against a real tritonserver.

A throwaway CA and a server certificate for localhost / 127.0.0.1 are made with the openssl CLI. tritonserver
serves gRPC over TLS (``--grpc-use-ssl``); Triton's HTTP endpoint has no TLS, so HTTPS is a small TLS-terminating
TCP proxy in front of it (as an ingress would be). Checked, for both protocols:

* without the CA the call fails at once with an UnavailableError naming TLS, is not retried, and no request
  reaches the server;
* with ``ca_certs`` the health calls and a real tryon go through;
* a certificate valid for another host name (the same server dialed as 127.0.0.2) is refused;
* nothing falls back to plaintext: every connection the client opens to a TLS endpoint begins with a TLS
  ClientHello, even when the handshake fails.
"""
from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from drape_client import AsyncDrapeClient, DrapeClient, RetryPolicy, UnavailableError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "build" / "samples"
RETRY = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)  # would retry a retryable failure: TLS must not be one
OTHER_HOST = "127.0.0.2"  # loopback too, but not a name in the server certificate


# ----------------------------------------------------------------------------------------------- certificates


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """ca.pem (a CA), server.pem/server.key (signed by it, for localhost and 127.0.0.1)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-days", "2", "-subj", "/CN=drape test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
             "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                               "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-out", str(d / "server.pem"), "-days", "2", "-extfile", str(d / "ext.cnf"))
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


# -------------------------------------------------------------------------------------------- TCP plumbing


class _Loop:
    """An asyncio loop on its own thread, for the proxies below."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def _forwarder(host: str, target: tuple[str, int], tls: ssl.SSLContext | None = None,
                     first_bytes: list[bytes] | None = None):
    """Listen on ``host``; forward each connection to ``target`` (terminating TLS with ``tls`` if given).

    ``first_bytes`` (with no target) makes it a recorder: it keeps the first bytes of each connection and hangs up.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if first_bytes is not None:
            try:
                first_bytes.append(await asyncio.wait_for(reader.read(16), 5))
            except (asyncio.TimeoutError, ConnectionError, OSError):
                first_bytes.append(b"")
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, host, 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture(scope="module")
def endpoints(pki, cpu_repo, tmp_path_factory):
    """A real tritonserver with gRPC over TLS, an HTTPS proxy in front of its HTTP port, and the same two
    endpoints reachable as 127.0.0.2 (TLS passed through untouched, so the certificate names the wrong host)."""
    from drape_serving.server import start_server

    log = tmp_path_factory.mktemp("tls") / "tritonserver.log"
    tls_args = ["--grpc-use-ssl=true", f"--grpc-server-cert={pki['cert']}", f"--grpc-server-key={pki['key']}"]
    loop = _Loop()
    with start_server(cpu_repo, log_file=log, ready_timeout=240, extra_args=tls_args) as server:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["cert"], pki["key"])
        servers = []
        try:
            https, https_port = loop.run(_forwarder("127.0.0.1", ("127.0.0.1", server.http_port), tls=ctx))
            grpc_other, grpc_other_port = loop.run(_forwarder(OTHER_HOST, ("127.0.0.1", server.grpc_port)))
            https_other, https_other_port = loop.run(_forwarder(OTHER_HOST, ("127.0.0.1", https_port)))
            servers += [https, grpc_other, https_other]
            yield {"server": server, "grpcs": f"grpcs://localhost:{server.grpc_port}",
                   "https": f"https://localhost:{https_port}",
                   "grpcs_other": f"grpcs://{OTHER_HOST}:{grpc_other_port}",
                   "https_other": f"https://{OTHER_HOST}:{https_other_port}", "loop": loop}
        finally:
            for s in servers:
                loop.loop.call_soon_threadsafe(s.close)
            loop.close()


def _pair() -> tuple[bytes, bytes]:
    return (SAMPLES / "person.jpg").read_bytes(), (SAMPLES / "garment.jpg").read_bytes()


# ----------------------------------------------------------------------------------------------------- tests


@pytest.mark.server
@pytest.mark.parametrize("scheme", ["grpcs", "https"])
def test_untrusted_certificate_is_refused_without_retry(endpoints, scheme):
    with DrapeClient(endpoints[scheme], timeout_s=10, retry=RETRY) as c:
        assert not c.ready()
        with pytest.raises(UnavailableError, match="TLS") as info:
            c.tryon(*_pair())
    assert info.value.attempts == 1, "a certificate failure must not be retried"


@pytest.mark.server
@pytest.mark.parametrize("scheme", ["grpcs", "https"])
def test_trusted_ca_serves_real_requests(endpoints, pki, scheme):
    person, garment = _pair()
    with DrapeClient(endpoints[scheme], timeout_s=120, retry=RETRY, ca_certs=str(pki["ca"])) as c:
        assert c.ready()
        rgb = c.tryon(person, garment)
        assert rgb.dtype.name == "uint8" and rgb.ndim == 3 and rgb.shape[2] == 3
        image, mask = c.recolor(person, garment)
        assert image.shape == rgb.shape and mask.shape == rgb.shape[:2]
        assert c.model_versions(["tryon"])["tryon"]  # metadata over TLS too

    async def go() -> bool:
        async with AsyncDrapeClient(endpoints[scheme], timeout_s=30, ca_certs=str(pki["ca"])) as ac:
            return await ac.ready()

    assert asyncio.run(go())


@pytest.mark.server
@pytest.mark.parametrize("scheme", ["grpcs", "https"])
def test_certificate_for_another_host_is_refused(endpoints, pki, scheme):
    with DrapeClient(endpoints[f"{scheme}_other"], timeout_s=10, retry=RETRY, ca_certs=str(pki["ca"])) as c:
        assert not c.ready()
        with pytest.raises(UnavailableError, match="TLS") as info:
            c.tryon(*_pair())
    assert info.value.attempts == 1


@pytest.mark.server
def test_plaintext_client_cannot_reach_the_tls_grpc_port(endpoints):
    """The server half: Triton's TLS gRPC port does not answer plaintext gRPC."""
    with DrapeClient(f"grpc://localhost:{endpoints['server'].grpc_port}", timeout_s=10, retry=RETRY) as c:
        assert not c.ready()


@pytest.mark.parametrize("scheme", ["grpcs", "https"])
def test_client_never_falls_back_to_plaintext(pki, scheme):
    """Every connection a grpcs/https client opens starts with a TLS handshake record, even when TLS fails."""
    loop = _Loop()
    seen: list[bytes] = []
    try:
        server, port = loop.run(_forwarder("127.0.0.1", ("", 0), first_bytes=seen))
        with DrapeClient(f"{scheme}://localhost:{port}", timeout_s=5, retry=RETRY, ca_certs=str(pki["ca"])) as c:
            assert not c.ready()
            with pytest.raises(UnavailableError):
                c.tryon(*_pair())
        loop.loop.call_soon_threadsafe(server.close)
    finally:
        loop.close()
    assert seen, "the client never connected"
    for first in seen:
        assert first[:1] == b"\x16" and first[1:2] == b"\x03", f"a connection did not start with TLS: {first!r}"
