"""The request-size gateway: nginx in front of Triton, so an oversized request never reaches it.

Why: Triton 2.51 has no request-body limit. A 300 MiB request is buffered by tritonserver, copied into a python
stub's shared memory (growing its /dev/shm region 96 -> 416 MiB for good) and only then refused by the
preprocess model's byte check (RELIABILITY.md, "Security"). The gateway refuses it first:

* HTTP (KServe v2 REST, proxied to Triton's HTTP port): a body over :data:`MAX_BODY_BYTES` gets **413** with a
  JSON body in Triton's error format, ``{"error": "request body over the drape gateway limit of ..."}``; with a
  ``Content-Length`` header this happens before the body is read at all.
* gRPC (cleartext HTTP/2, ``grpc_pass`` to Triton's gRPC port): the stream gets **INVALID_ARGUMENT** (code 3) with
  a ``grpc-message`` naming the limit. Not RESOURCE_EXHAUSTED / UNAVAILABLE: clients retry those, and the same
  body can never succeed.
* Bodies are read completely and checked before a byte is forwarded: HTTP by nginx's default request buffering;
  gRPC through ``mirror`` + ``mirror_request_body on`` (``grpc_pass`` alone streams request bodies as they arrive,
  ngx_http_grpc_module sets ``request_body_no_buffering``; reading the body for the mirror subrequest is how
  nginx's own test suite buffers gRPC bodies, ``grpc_request_buffering.t``).
* Triton unreachable (restarting, not listening yet) is reported the way Triton's own overload is, so clients
  retry it: HTTP 503 / gRPC UNAVAILABLE; an upstream timeout is HTTP 504 / gRPC DEADLINE_EXCEEDED.
* gRPC streaming (``ModelStreamInfer``) is refused with UNIMPLEMENTED: a stream is one body for all its messages,
  which nginx would hold back until the stream ends and could only limit as a whole. drape's contract is unary.

The limit comes from the contract: a request carries one image pair (``tryon``: person + garment, ``recolor``:
on-model + still), each at most ``contract.MAX_IMAGE_BYTES`` as binary tensor data, plus the request framing
(the KServe JSON header or the ModelInferRequest protobuf: well under a kilobyte; :data:`FRAMING_BYTES` leaves a
MiB). Image bytes sent as JSON numbers (``"data": [255, 216, ...]``, up to 4 bytes per byte) take more room, so
such requests are refused from roughly 8 MiB per image: use binary tensor data (tritonclient and drape_client do).

One config, written only here (:func:`render`): ``k8s/base/gateway/nginx.conf`` is ``render(K8S)``
(``python -m drape_serving.gateway k8s``; tests keep the file equal to it and run ``nginx -t`` on it), shipped to
the gateway sidecar by a kustomize ``configMapGenerator``; ``drape-serve --gateway`` and the tests render it with
their own ports and run the real nginx in front of a local tritonserver (:func:`start_gateway`). Paths in the
config are relative to nginx's prefix (``-p``): ``/tmp/`` in the pod (an emptyDir under a read-only root
filesystem), a fresh temporary directory locally.

Standard library only; torch-free like the rest of drape_serving.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from drape_core import contract

from .procs import die_with_parent, free_ports

__all__ = [
    "IMAGES_PER_REQUEST",
    "FRAMING_BYTES",
    "MAX_BODY_BYTES",
    "GRPC_INVALID_ARGUMENT",
    "GatewaySettings",
    "K8S",
    "K8S_CONFIG",
    "GatewayError",
    "GatewayHandle",
    "limit_message",
    "render",
    "render_k8s",
    "configured_limit",
    "find_nginx",
    "start_gateway",
    "main",
]

_MIB = 1024 * 1024
# Every public ensemble takes one image pair; the largest input count of any ensemble bounds a request.
IMAGES_PER_REQUEST = max(len(spec.inputs) for spec in contract.ENSEMBLES.values())
# The KServe JSON header of a binary request or the ModelInferRequest protobuf around the raw bytes: names,
# shapes, datatypes, parameters. Measured well under 1 KiB for both ensembles; a MiB keeps clear of it.
FRAMING_BYTES = 1 * _MIB
MAX_BODY_BYTES = IMAGES_PER_REQUEST * contract.MAX_IMAGE_BYTES + FRAMING_BYTES
GRPC_INVALID_ARGUMENT = 3
GRPC_UNAVAILABLE = 14
GRPC_DEADLINE_EXCEEDED = 4
GRPC_UNIMPLEMENTED = 12
GRPC_INTERNAL = 13

K8S_CONFIG = Path(__file__).resolve().parent.parent.parent / "k8s" / "base" / "gateway" / "nginx.conf"


def limit_message() -> str:
    """What a refused client reads (HTTP ``error`` / gRPC ``grpc-message``): the limit in bytes and why."""
    return (f"request body over the drape gateway limit of {MAX_BODY_BYTES} bytes "
            f"({MAX_BODY_BYTES / _MIB:.0f} MiB: {IMAGES_PER_REQUEST} images of at most {contract.MAX_IMAGE_BYTES} "
            f"bytes each, contract.MAX_IMAGE_BYTES, plus {FRAMING_BYTES // _MIB} MiB of request framing; "
            "send image bytes as binary tensor data)")


@dataclass(frozen=True)
class GatewaySettings:
    """What differs between the pod and a local run: where nginx listens and where Triton is.

    ``listen_*`` are nginx ``listen`` addresses (``8080``, ``127.0.0.1:41234``), ``triton_*`` ``host:port`` of
    Triton's HTTP and gRPC endpoints.
    """

    listen_http: str
    listen_grpc: str
    triton_http: str
    triton_grpc: str
    worker_processes: int = 1


# In the pod Triton binds 127.0.0.1:8000/8001 (the gateway is the only way in); the gateway listens on 8080/8081
# (the Service maps 8000/8001 there). Two workers: one upstream keepalive pool each, bodies checked in parallel.
K8S = GatewaySettings(listen_http="8080", listen_grpc="8081", triton_http="127.0.0.1:8000",
                      triton_grpc="127.0.0.1:8001", worker_processes=2)

# Longest request seen on CPU is ~120 s (a 2048x1536 pair under load); the upstream read/send timeouts allow 300 s
# so that the client's own deadline (drape_client timeout_s, gRPC deadlines) is what ends a slow request.
_UPSTREAM_TIMEOUT_S = 300

_TEMPLATE = """\
# GENERATED by drape_serving.gateway.render() (model_repository/drape_serving/gateway.py): edit that, not this.
{run_note}
# The request-size gateway in front of Triton: bodies over {max_body} bytes never reach it.
#   {limit_message}
# Paths are relative to the prefix (nginx -p): /tmp/ in the pod (emptyDir, read-only root fs), a temp dir locally.
daemon off;
worker_processes {workers};
# SIGQUIT (the pod's stop signal) lets in-flight requests finish, within the pod's termination grace period.
worker_shutdown_timeout 40s;
pid nginx.pid;
# Refusals ("client intended to send too large body") and upstream errors; not the warn-level "a client request
# body is buffered to a temporary file" that every body over client_body_buffer_size logs.
error_log stderr error;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    # The limit, checked before anything is forwarded (see the header). Bodies up to 1 MiB stay in memory,
    # larger ones are spooled to client_body_temp until complete.
    client_max_body_size {max_body};
    client_body_buffer_size 1m;
    client_body_timeout 60s;
    client_header_timeout 30s;
    send_timeout 60s;
    keepalive_timeout 300s;
    keepalive_requests 100000;

    upstream triton_http {{
        server {triton_http} max_fails=0;
        keepalive 16;
        keepalive_timeout 60s;
    }}

    upstream triton_grpc {{
        server {triton_grpc} max_fails=0;
        keepalive 16;
        keepalive_timeout 60s;
    }}

    # KServe v2 over HTTP/1.1.
    server {{
        listen {listen_http};

        location / {{
            proxy_pass http://triton_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s;
            proxy_send_timeout {timeout}s;
            proxy_read_timeout {timeout}s;
            # Responses (decoded images, up to 48 MiB at 4096x4096) go to the client as they come; nothing to disk.
            proxy_buffering off;
            proxy_intercept_errors off;
        }}

        error_page 413 = @too_large;
        error_page 500 = @internal;
        error_page 502 = @unavailable;
        error_page 504 = @timeout;

{http_errors}
    }}

    # gRPC (KServe v2 GRPCInferenceService) over cleartext HTTP/2.
    server {{
        listen {listen_grpc} http2;

        location / {{
            # grpc_pass streams request bodies; reading the body for this mirror subrequest first makes nginx
            # check client_max_body_size on the whole body before a byte is sent to Triton.
            mirror /_drape_read_body;
            mirror_request_body on;
            grpc_pass grpc://triton_grpc;
            grpc_connect_timeout 5s;
            grpc_send_timeout {timeout}s;
            grpc_read_timeout {timeout}s;
        }}

        location = /_drape_read_body {{
            internal;
            return 204;
        }}

        # A gRPC stream is one request body for all its messages: nginx can neither forward it message by message
        # (it reads the body first) nor limit single messages. drape's contract is unary ModelInfer, so streaming
        # is refused at once instead of hanging until the client gives up.
        location = /inference.GRPCInferenceService/ModelStreamInfer {{
            default_type application/grpc;
            add_header grpc-status {grpc_unimplemented} always;
            add_header grpc-message "drape gateway: streaming inference is not served, use ModelInfer" always;
            return 204;
        }}

        error_page 413 = @too_large;
        error_page 500 = @internal;
        error_page 502 = @unavailable;
        error_page 504 = @timeout;

        # A trailers-only gRPC response: HTTP/2 headers carrying grpc-status and grpc-message, no body.
{grpc_errors}
    }}
}}
"""


def _error_answers(message: str) -> tuple[tuple[str, int, int, str], ...]:
    """(location, HTTP status, gRPC status, message) of every error the gateway answers itself."""
    return (
        ("too_large", 413, GRPC_INVALID_ARGUMENT, message),
        ("internal", 500, GRPC_INTERNAL, "drape gateway: internal error (see the gateway log)"),
        ("unavailable", 503, GRPC_UNAVAILABLE, "drape gateway: Triton is unavailable (not listening or restarting); retry"),
        ("timeout", 504, GRPC_DEADLINE_EXCEEDED, f"drape gateway: no answer from Triton within {_UPSTREAM_TIMEOUT_S} s"),
    )


def _http_error_locations(message: str) -> str:
    """One ``location @name`` per HTTP error answer: Triton's JSON error format."""
    return "\n".join(
        f"        location @{name} {{\n"
        f"            default_type application/json;\n"
        f"            return {http} '{{\"error\":\"{text}\"}}';\n"
        f"        }}" for name, http, _, text in _error_answers(message))


def _grpc_error_locations(message: str) -> str:
    """One ``location @name`` per gRPC error answer: trailers-only, grpc-status and grpc-message in the headers."""
    return "\n".join(
        f"        location @{name} {{\n"
        f"            default_type application/grpc;\n"
        f"            add_header grpc-status {grpc} always;\n"
        f'            add_header grpc-message "{text}" always;\n'
        f"            return 204;\n"
        f"        }}" for name, _, grpc, text in _error_answers(message))


def render(settings: GatewaySettings, *, run_note: str = "") -> str:
    """The nginx config for ``settings``: the one place the gateway's behaviour is written."""
    message = limit_message()
    # Quoted into nginx strings (single and double) and a JSON string; `$` would be an nginx variable.
    if set(message) & set("\"'\\$%{}"):
        raise ValueError(f"limit message cannot be quoted into the nginx config: {message!r}")
    return _TEMPLATE.format(
        run_note=run_note or "# Local run (drape-serve --gateway, tests): nginx -p <prefix> -c <this file> -e stderr",
        max_body=MAX_BODY_BYTES, limit_message=message, workers=settings.worker_processes,
        listen_http=settings.listen_http, listen_grpc=settings.listen_grpc, triton_http=settings.triton_http,
        triton_grpc=settings.triton_grpc, timeout=_UPSTREAM_TIMEOUT_S, grpc_invalid_argument=GRPC_INVALID_ARGUMENT,
        grpc_unavailable=GRPC_UNAVAILABLE, grpc_internal=GRPC_INTERNAL, grpc_unimplemented=GRPC_UNIMPLEMENTED,
        grpc_deadline_exceeded=GRPC_DEADLINE_EXCEEDED, grpc_errors=_grpc_error_locations(message),
        http_errors=_http_error_locations(message),
    )


def render_k8s() -> str:
    """``k8s/base/gateway/nginx.conf``: :data:`K8S` as the sidecar runs it."""
    return render(K8S, run_note=(
        "# Kubernetes: the `gateway` sidecar of k8s/base/triton-deployment.yaml runs\n"
        "#   nginx -p /tmp/ -c /etc/drape-gateway/nginx.conf -e stderr\n"
        "# Regenerate: python -m drape_serving.gateway k8s > k8s/base/gateway/nginx.conf (tests/test_gateway.py checks)"))


# ------------------------------------------------------------------------------------------------ running nginx


class GatewayError(RuntimeError):
    """nginx is missing, refused the config, or did not start listening; the message says which and why."""


_NGINX_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin", "/usr/bin")


def find_nginx() -> str:
    """Path of the nginx binary, or :class:`GatewayError` saying how to install it."""
    found = shutil.which("nginx")
    if found:
        return found
    for folder in _NGINX_DIRS:
        candidate = Path(folder) / "nginx"
        if candidate.is_file():
            return str(candidate)
    raise GatewayError("nginx is not installed (the request-size gateway runs it): apt-get install -y nginx "
                       "(Debian/Ubuntu; any nginx >= 1.19.5 with the http_v2, grpc and mirror modules works)")


class Endpoints:
    """``http_url`` / ``grpc_url`` from ``host`` and the two ports, as tritonclient takes them (no scheme).
    Shared by the gateway's and the server's handles: a client talks to either the same way."""

    host: str
    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        """``host:port`` for ``tritonclient.http``."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc``."""
        return f"{self.host}:{self.grpc_port}"


@dataclass
class GatewayHandle(Endpoints):
    """A running nginx gateway. ``stop()`` (or leaving the ``with`` block) shuts it down and removes its prefix."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    host: str
    prefix: Path
    config: str = field(repr=False)
    _tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40), repr=False)
    _pump: threading.Thread | None = field(default=None, repr=False)
    _own_prefix: bool = field(default=True, repr=False)

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGQUIT (graceful: in-flight requests finish), SIGKILL after ``timeout``; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        if self._own_prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> "GatewayHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _pump(stream: IO[bytes], tail: collections.deque, echo: IO[str] | None) -> None:
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if echo is not None:
                echo.write(f"drape-gateway: {line}\n")
                echo.flush()
    finally:
        stream.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_gateway(triton_http_port: int, triton_grpc_port: int, http_port: int | None = None,
                  grpc_port: int | None = None, *, address: str = "127.0.0.1", triton_host: str = "127.0.0.1",
                  ready_timeout: float = 15.0, echo: bool = False, nginx: str | None = None) -> GatewayHandle:
    """Run nginx with :func:`render`'s config in front of Triton; return once both ports accept connections.

    Ports left as ``None`` are picked free. The prefix (config, pid, temp paths) is a fresh temporary directory,
    removed by ``stop()``. nginx runs in the foreground (``daemon off``) as a child that gets SIGTERM if the
    launching thread dies. Raises :class:`GatewayError` with nginx's own words if the config test fails or it
    does not listen within ``ready_timeout`` seconds.
    """
    binary = nginx or find_nginx()
    picked = iter(free_ports(2, address if address not in ("", "0.0.0.0") else "127.0.0.1"))
    http_port = http_port if http_port is not None else next(picked)
    grpc_port = grpc_port if grpc_port is not None else next(picked)
    bind = "" if address in ("", "0.0.0.0") else f"{address}:"
    settings = GatewaySettings(listen_http=f"{bind}{http_port}", listen_grpc=f"{bind}{grpc_port}",
                               triton_http=f"{triton_host}:{triton_http_port}",
                               triton_grpc=f"{triton_host}:{triton_grpc_port}")
    config = render(settings)
    prefix = Path(tempfile.mkdtemp(prefix="drape-gateway-"))
    prefix.chmod(0o711)  # started as root, nginx's workers run as `nobody` and must reach their temp paths
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    argv = [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"]
    test = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True)
    if test.returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)
        raise GatewayError(f"nginx refused the gateway config ({binary}):\n{(test.stderr or test.stdout).strip()}")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=die_with_parent)
    host = "127.0.0.1" if address in ("", "0.0.0.0") else address
    handle = GatewayHandle(process=process, http_port=http_port, grpc_port=grpc_port, host=host, prefix=prefix,
                           config=config)
    handle._pump = threading.Thread(target=_pump, args=(process.stdout, handle._tail, sys.stderr if echo else None),
                                    daemon=True)
    handle._pump.start()
    deadline = time.monotonic() + ready_timeout
    try:
        while not (_accepts(host, http_port) and _accepts(host, grpc_port)):
            if process.poll() is not None:
                handle._pump.join(timeout=2)
                raise GatewayError(f"nginx exited with code {process.returncode} before listening on "
                                   f"{host}:{http_port} / {host}:{grpc_port}:\n{handle.log_tail()}")
            if time.monotonic() > deadline:
                raise GatewayError(f"nginx not listening on {host}:{http_port} / {host}:{grpc_port} after "
                                   f"{ready_timeout:.0f}s:\n{handle.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        handle.stop()
        raise
    return handle


# ------------------------------------------------------------------------------------------------------- CLI


def configured_limit(config_text: str) -> int:
    """``client_max_body_size`` of a rendered config, in bytes (``k``/``m``/``g`` suffixes understood)."""
    sizes = re.findall(r"^\s*client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", config_text, re.M)
    if len(sizes) != 1:
        raise ValueError(f"expected one client_max_body_size, found {len(sizes)}")
    number, unit = sizes[0]
    return int(number) * {"": 1, "k": 1024, "m": _MIB, "g": 1024 * _MIB}[unit.lower()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drape_serving.gateway",
                                     description="Render the request-size gateway's nginx config.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("k8s", help="the config of the Kubernetes sidecar (k8s/base/gateway/nginx.conf) to stdout")
    local = sub.add_parser("render", help="a config for other ports to stdout")
    local.add_argument("--listen-http", default="8080")
    local.add_argument("--listen-grpc", default="8081")
    local.add_argument("--triton-http", default="127.0.0.1:8000")
    local.add_argument("--triton-grpc", default="127.0.0.1:8001")
    sub.add_parser("limit", help="print the body limit in bytes and what it is made of")
    args = parser.parse_args(argv)
    if args.command == "k8s":
        sys.stdout.write(render_k8s())
    elif args.command == "render":
        sys.stdout.write(render(GatewaySettings(args.listen_http, args.listen_grpc, args.triton_http,
                                                args.triton_grpc)))
    else:
        print(f"{MAX_BODY_BYTES}\t{limit_message()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
