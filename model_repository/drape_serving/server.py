"""Run the tritonserver shipped inside the nvidia-pytriton wheel on a drape model repository.

``python -m drape_serving.server --model-repository build/model_repository/cpu``
(or ``drape-serve ...``) starts the server in the foreground, waits until every
model is ready, prints how to call it, and on Ctrl-C / SIGTERM shuts tritonserver
down cleanly and exits 0. Tests use :func:`start_server`, a context manager.

The wheel carries a real ``tritonserver`` binary, its python backend and one
python-backend stub per Python version. The stub must match the interpreter
that runs the python models (this one), so the backend is copied once into a
writable directory with the matching stub next to ``libtriton_python.so``. The
stub imports packages from the first ``python`` on PATH, so this interpreter's
bin directory goes first.

Admin APIs (model-repository, shared-memory, statistics, trace, logging) are restricted on HTTP and gRPC
behind the header ``drape-admin-key`` (Triton's ``--http-restricted-api`` / ``--grpc-restricted-protocol``; gRPC
clients send it as ``triton-grpc-protocol-drape-admin-key``). The key comes from ``$DRAPE_ADMIN_KEY`` or is
generated per start; :meth:`ServerHandle.admin_headers` builds the headers. Health, metadata, model config and
inference stay open; Prometheus metrics are on their own port. Triton only takes the key on its command line,
so it is visible to local users who can list processes: run the server in its own container/user.

``drape-serve --gateway`` puts the request-size gateway (nginx, :mod:`drape_serving.gateway`, the config the
Kubernetes sidecar runs) on the HTTP/gRPC ports and binds tritonserver's own HTTP/gRPC to 127.0.0.1: request bodies
over two contract images plus framing are refused before Triton, which has no body limit, buffers them.

Before starting, a GPU repository's TensorRT plans are checked against this machine's GPU architecture and
TensorRT version (``drape_serving.plan_check``); a mismatch refuses to start with a message naming the model.

Torch-free by design: importing this module pulls in only the standard library.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

from .gateway import MAX_BODY_BYTES, Endpoints, GatewayError, find_nginx, start_gateway
from .procs import die_with_parent, free_port, free_ports  # noqa: F401 (free_port(s): re-exported)
# Locating the install, its environment and command line, the admin key: drape_serving.triton, re-exported here.
from .triton import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    DEFAULT_EXIT_TIMEOUT_S,
    MALLOC_LIBS,
    RESTRICTED_APIS,
    _ADMIN_KEY_FORM,
    _GRPC_HEADER_PREFIX,
    _MIB,
    ServerStartError,
    TritonInstall,
    _restricted_api_args,
    _server_command,
    _server_env,
    admin_key_from_env,
    find_triton,
    malloc_preload,
    prepare_backend_dir,
    python_shm_bytes,
)

__all__ = [
    "TritonInstall",
    "ServerStartError",
    "ServerHandle",
    "find_triton",
    "prepare_backend_dir",
    "python_shm_bytes",
    "start_server",
    "free_port",
    "free_ports",
    "sample_command",
    "admin_key_from_env",
    "ADMIN_HEADER",
    "ADMIN_KEY_ENV",
    "RESTRICTED_APIS",
    "main",
    # re-exported from drape_serving.triton as well (tests import _restricted_api_args from here)
    "malloc_preload",
    "MALLOC_LIBS",
    "_restricted_api_args",
]

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_READY_TIMEOUT_S = 300.0
_LOG_TAIL_LINES = 60
_ERROR_LINES = 15
_ERROR_LINE = re.compile(r"^E\d{4} ")
# Harmless on machines without CUDA; kept out of failure summaries so the real error stands out.
_CPU_NOISE = ("CudaDriverHelper", "CUDA driver version is insufficient")


# --------------------------------------------------------------------- ports, urls


SAMPLE_DIR = Path("build/samples")


def sample_command(http_port: int, grpc_port: int) -> str:
    """A copy-paste command that sends one real try-on request through the thin client (gRPC).

    `make serve` puts a sample person and garment in build/samples/ (from the synthetic test split).
    """
    py = Path(sys.executable)
    try:
        py = py.relative_to(Path.cwd())
    except ValueError:
        pass
    return (f"{py} -m drape_client --url localhost:{grpc_port} tryon --person {SAMPLE_DIR}/person.jpg "
            f"--garment {SAMPLE_DIR}/garment.jpg --out tryon.png")


# ------------------------------------------------------------------------ process


@dataclass
class ServerHandle(Endpoints):
    """A running tritonserver. ``stop()`` (or leaving the ``with`` block) shuts it down."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str
    log_file: Path | None
    command: list[str] = field(repr=False)  # carries the admin key
    startup_s: float = 0.0
    admin_key: str = field(default="", repr=False)
    _tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=_LOG_TAIL_LINES), repr=False)
    _errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=_ERROR_LINES), repr=False)
    _pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted admin APIs (``headers=`` of tritonclient calls)."""
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        name = ADMIN_HEADER if protocol == "http" else _GRPC_HEADER_PREFIX + ADMIN_HEADER
        return {name: self.admin_key}

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` non-blank lines tritonserver printed."""
        return "\n".join([line for line in self._tail if line.strip()][-lines:])

    def failure_report(self) -> str:
        """Error lines from the whole log, then its tail: what a failed start needs to show."""
        errors = "\n".join(self._errors) or "(none)"
        return (
            f"--- error lines from the server log{self._log_hint()} ---\n{errors}\n"
            f"--- last lines of the server log ---\n{self.log_tail(25)}"
        )

    def is_running(self) -> bool:
        return self.process.poll() is None

    def is_ready(self, timeout: float = 2.0) -> bool:
        """``GET /v2/health/ready`` == 200 (with strict readiness: every model is ready)."""
        return _http_ready(self.host, self.http_port, timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Block until ready; raise :class:`ServerStartError` with the log tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._join_pump()
                raise ServerStartError(
                    f"tritonserver exited with code {code} before becoming ready.\n{self.failure_report()}"
                )
            if self.is_ready(timeout=1.0):
                return
            time.sleep(0.25)
        raise ServerStartError(
            f"tritonserver not ready after {timeout:.0f}s (still loading models?).\n{self.failure_report()}"
        )

    def stop(self, timeout: float = DEFAULT_EXIT_TIMEOUT_S + 30) -> int:
        """SIGTERM tritonserver, wait (SIGKILL after ``timeout``), return its exit code. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap_stubs()
        self._join_pump()
        return self.process.returncode

    def _reap_stubs(self, grace_s: float = 5.0) -> None:
        """Clean up after a tritonserver that was killed, crashed or ran out its exit timeout.

        Its python-backend stubs usually notice and exit (removing their /dev/shm regions), but not always:
        some were still running 30 minutes after a ``kill -9`` of tritonserver, ~100 MB each. After ``grace_s``
        the ones left (only stub processes of tritonserver's own session) are SIGKILLed, and the regions under
        this server's unique shm prefix are removed: a forced exit otherwise leaves ~96 MiB of /dev/shm per
        python-model instance behind (measured: tests/reliability/faults.py, RELIABILITY.md).
        """
        deadline = time.monotonic() + grace_s
        while self._stub_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self._stub_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        prefix = next((a.split("shm-region-prefix-name=", 1)[1] for a in self.command
                       if "shm-region-prefix-name=" in a), "")
        if prefix.startswith("drape_"):  # ours, unique per start (see _server_command)
            deadline = time.monotonic() + 2.0
            while self._stub_pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            for region in Path("/dev/shm").glob(prefix + "*"):
                try:
                    region.unlink()
                except OSError:
                    pass

    def _stub_pids(self) -> list[int]:
        """Live python-backend stubs in tritonserver's process group (its session: start_new_session)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rfind(")") + 2:].split()
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            except (OSError, ValueError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == self.process.pid and argv0.endswith(b"triton_python_backend_stub"):
                pids.append(int(entry.name))
        return pids

    def _join_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)

    def _log_hint(self) -> str:
        return f" ({self.log_file})" if self.log_file else ""

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _http_ready(host: str, port: int, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _pump_output(
    stream: IO[bytes], tail: collections.deque, errors: collections.deque, log: IO[str] | None, echo: IO[str] | None
) -> None:
    """Copy tritonserver's output to the log file / console, keeping the tail and error lines for failures."""
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if _ERROR_LINE.match(line) and not any(noise in line for noise in _CPU_NOISE):
                errors.append(line)
            if log is not None:
                log.write(line + "\n")
                log.flush()
            if echo is not None:
                echo.write(line + "\n")
                echo.flush()
    finally:
        stream.close()
        if log is not None:
            log.close()


def start_server(
    model_repository: str | Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    log_file: str | Path | None = None,
    *,
    address: str = "127.0.0.1",
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
    echo: bool = False,
    backend_root: str | Path | None = None,
    extra_args: Iterable[str] = (),
    admin_key: str | None = None,
    metrics_address: str | None = None,
) -> ServerHandle:
    """Start tritonserver on ``model_repository`` and return once every model is ready.

    Ports left as ``None`` are picked free. ``log_file`` receives the server's
    output (``echo=True`` also copies it to stderr). Raises
    :class:`ServerStartError` (with the log tail) if the server dies or is not
    ready within ``ready_timeout`` seconds; the process is stopped in that case.
    ``admin_key`` (default: ``$DRAPE_ADMIN_KEY`` or a random key) guards the admin APIs; see the module docstring.
    ``metrics_address`` binds the metrics endpoint elsewhere than HTTP/gRPC (default: ``address``), e.g.
    HTTP/gRPC on 127.0.0.1 behind the request-size gateway while Prometheus scrapes metrics on 0.0.0.0.
    A GPU repository whose TensorRT plans do not match this machine raises :class:`ServerStartError` first.
    """
    repo = Path(model_repository).resolve()
    if not repo.is_dir():
        raise ServerStartError(f"model repository not found: {repo} (build it with `python -m drape_export repo ...`)")
    from .plan_check import PlanMismatchError, check_repository

    try:
        for note in check_repository(repo):
            print(f"drape-serve: plan check: {note}", file=sys.stderr)
    except PlanMismatchError as exc:
        raise ServerStartError(f"refusing to start: {exc}") from None
    admin_key = admin_key_from_env() if admin_key is None else admin_key
    if not _ADMIN_KEY_FORM.match(admin_key):
        raise ServerStartError("admin_key must be 16-256 characters of A-Z a-z 0-9 _ - . ~")
    install = find_triton()
    backend_dir = prepare_backend_dir(install, backend_root)
    picked = iter(free_ports(3))
    ports = tuple(p if p is not None else next(picked) for p in (http_port, grpc_port, metrics_port))
    command = _server_command(install, backend_dir, repo, ports, address, extra_args, admin_key, metrics_address)

    log = None
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "w", encoding="utf-8")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=_server_env(install),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches only the launcher, which forwards SIGTERM itself
        preexec_fn=die_with_parent,
    )
    handle = ServerHandle(
        process=process,
        http_port=ports[0],
        grpc_port=ports[1],
        metrics_port=ports[2],
        host="127.0.0.1" if address in ("0.0.0.0", "") else address,
        log_file=Path(log_file) if log_file is not None else None,
        command=command,
        admin_key=admin_key,
    )
    handle._pump = threading.Thread(
        target=_pump_output,
        args=(process.stdout, handle._tail, handle._errors, log, sys.stderr if echo else None),
        daemon=True,
    )
    handle._pump.start()
    try:
        handle.wait_ready(ready_timeout)
    except BaseException:
        handle.stop()
        raise
    handle.startup_s = time.monotonic() - started
    return handle


# ---------------------------------------------------------------------------- CLI


class _StopRequested(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler."""


def _raise_stop(signum, frame) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"drape-serve: {name}={value!r} is not a port number") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drape-serve", description="Serve a drape model repository with tritonserver.")
    parser.add_argument("--model-repository", required=True, help="e.g. build/model_repository/cpu")
    parser.add_argument("--http-port", type=int, default=_env_port("HTTP_PORT", DEFAULT_HTTP_PORT), help="default: $HTTP_PORT or 8000")
    parser.add_argument("--grpc-port", type=int, default=_env_port("GRPC_PORT", DEFAULT_GRPC_PORT), help="default: $GRPC_PORT or 8001")
    parser.add_argument(
        "--metrics-port", type=int, default=_env_port("METRICS_PORT", DEFAULT_METRICS_PORT), help="default: $METRICS_PORT or 8002"
    )
    parser.add_argument("--address", default="0.0.0.0", help="bind address for all endpoints (default: %(default)s)")
    parser.add_argument("--log-file", default=None, help="also write the server log to this file")
    parser.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT_S, help="seconds to wait for readiness")
    parser.add_argument("--backend-root", default=None, help="where to keep the writable python backend copy")
    parser.add_argument(
        "--gateway", action="store_true",
        help="run the request-size gateway (nginx, as in the Kubernetes pod) on --http-port/--grpc-port in front of "
             "tritonserver, which then listens on 127.0.0.1 only: request bodies over 2 x MAX_IMAGE_BYTES + 1 MiB "
             "are refused before they reach Triton (needs nginx: apt-get install nginx)")
    return parser


def _describe_repository(repo: Path) -> str:
    manifest = repo / "manifest.json"
    if not manifest.is_file():
        return str(repo)
    try:
        info = json.loads(manifest.read_text())
        res = info["resolution"]
        return f"{repo} ({info['target']}, {res['height']}x{res['width']}, ensembles: {', '.join(info['ensembles'])})"
    except (OSError, ValueError, KeyError):
        return str(repo)


def _wait_for_exit(handle: ServerHandle, gateway) -> int:
    """Block until tritonserver (or the gateway) exits on its own; report it and return an exit code."""
    if gateway is None:
        code = handle.process.wait()
        print(f"drape-serve: tritonserver exited unexpectedly with code {code}", file=sys.stderr)
        return code or 1
    while True:
        code = handle.process.poll()
        if code is not None:
            print(f"drape-serve: tritonserver exited unexpectedly with code {code}", file=sys.stderr)
            return code or 1
        code = gateway.process.poll()
        if code is not None:
            print(f"drape-serve: the gateway (nginx) exited unexpectedly with code {code}:\n{gateway.log_tail()}",
                  file=sys.stderr)
            return code or 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """Foreground server: start, wait ready, print usage, run until Ctrl-C/SIGTERM, exit 0 on request.

    ``--gateway``: tritonserver's HTTP and gRPC endpoints bind to 127.0.0.1 on free ports and the request-size
    gateway (nginx, :mod:`drape_serving.gateway`, the config the Kubernetes sidecar runs) takes ``--http-port`` /
    ``--grpc-port`` on ``--address`` in front of them; metrics stay on ``--address:--metrics-port``.
    """
    args = _build_parser().parse_args(argv)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    handle = None
    gateway = None
    try:
        nginx = find_nginx() if args.gateway else None  # before minutes of model loading: a missing nginx fails at once
        print(f"drape-serve: starting tritonserver on {_describe_repository(Path(args.model_repository))}", file=sys.stderr)
        if args.gateway:
            handle = start_server(args.model_repository, None, None, args.metrics_port, args.log_file,
                                  address="127.0.0.1", metrics_address=args.address, ready_timeout=args.ready_timeout,
                                  echo=True, backend_root=args.backend_root)
            gateway = start_gateway(handle.http_port, handle.grpc_port, args.http_port, args.grpc_port,
                                    address=args.address, echo=True, nginx=nginx)
            public = gateway
            via = (f"\n  through the request-size gateway (nginx): request bodies over {MAX_BODY_BYTES} bytes "
                   f"({MAX_BODY_BYTES / _MIB:.0f} MiB) are refused before they reach Triton "
                   f"(Triton itself: HTTP {handle.http_url}, gRPC {handle.grpc_url}, loopback only)")
        else:
            handle = start_server(
                args.model_repository,
                args.http_port,
                args.grpc_port,
                args.metrics_port,
                args.log_file,
                address=args.address,
                ready_timeout=args.ready_timeout,
                echo=True,
                backend_root=args.backend_root,
            )
            public, via = handle, ""
        key_origin = f"from ${ADMIN_KEY_ENV}" if os.environ.get(ADMIN_KEY_ENV) else \
            f"generated for this run; set ${ADMIN_KEY_ENV} to choose one"
        print(
            f"\ndrape-serve: ready in {handle.startup_s:.1f}s  HTTP {public.http_url}  gRPC {public.grpc_url}  "
            f"metrics {handle.metrics_url}{via}\n  try: {sample_command(public.http_port, public.grpc_port)}\n"
            f"  admin APIs ({', '.join(RESTRICTED_APIS)}) need the header {ADMIN_HEADER} ({key_origin}):\n"
            f"    curl -X POST -H '{ADMIN_HEADER}: {handle.admin_key}' http://localhost:{public.http_port}/v2/repository/index\n"
            f"    gRPC metadata: {_GRPC_HEADER_PREFIX}{ADMIN_HEADER}: {handle.admin_key}\n"
            "  Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        code = _wait_for_exit(handle, gateway)
        if gateway is not None:
            gateway.stop()
        handle.stop()  # tritonserver is gone (or the gateway is): reap stubs and shm regions it may have left
        return code
    except _StopRequested as stop:
        print(f"drape-serve: {stop}, stopping {'the gateway and ' if gateway is not None else ''}tritonserver...",
              file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the shutdown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if gateway is not None:
            gateway.stop()
        if handle is not None:
            handle.stop()
        return 0
    except (ServerStartError, GatewayError) as exc:
        print(f"drape-serve: error: {exc}", file=sys.stderr)
        if gateway is not None:
            gateway.stop()
        if handle is not None:
            handle.stop()
        return 1


if __name__ == "__main__":
    sys.exit(main())
