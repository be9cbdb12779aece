"""Health check that also sees dead python-backend stubs: what the Kubernetes probes run.

``python3 -m drape_serving.health live`` (liveness) / ``... ready`` (readiness) exit 0 when

* Triton answers ``/v2/health/live`` (``ready``: ``/v2/health/ready``, strict readiness: every model loaded), and
* every python-model instance Triton loaded still has its ``triton_python_backend_stub`` process.

Why the second check: each python-model instance runs in its own stub process. When a stub dies (OOM kill, a
segfault in ONNX Runtime, ``kill -9``), Triton 2.51 neither restarts it nor marks anything unready: server
readiness, model readiness and liveness all stay 200 while every request scheduled on that instance fails with
``Stub process '<instance>' is not healthy`` (measured: tests/reliability/faults.py, RELIABILITY.md). Only a
restart of tritonserver brings the instance back, so the liveness probe has to notice the missing stub.

The expected instances come from Triton itself (``/v2/models/<model>/config`` of every model behind the public
ensembles, ``backend: python``: ``<group name>_<index>`` per ``instance_group`` count); the live ones are the
children of the tritonserver process whose command line is the stub's, zombies excluded (Triton does not reap a
killed stub). In the container tritonserver is found by name; elsewhere pass ``--pid``.

Standard library only (runs as an exec probe every few seconds inside the serving image).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from drape_core import contract

__all__ = ["StubStatus", "python_instances", "live_stubs", "find_server_pid", "stub_status", "check", "main"]

STUB_BINARY = "triton_python_backend_stub"
_PROC = Path("/proc")


@dataclass(frozen=True)
class StubStatus:
    """Which python-model instances Triton loaded, and which of them still have a live stub process."""

    expected: tuple[str, ...]
    alive: dict[str, int]  # instance name -> stub pid

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in self.expected if name not in self.alive)


def _get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def _status(url: str, timeout: float) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def _served_models() -> tuple[str, ...]:
    """Every non-ensemble model behind the public ensembles (pre/post-processing and networks)."""
    names: list[str] = []
    for spec in contract.ENSEMBLES.values():
        for name in (spec.preprocess_model, *spec.networks, spec.postprocess_model):
            if name not in names:
                names.append(name)
    return tuple(names)


def python_instances(base_url: str, models: Iterable[str] | None = None, timeout: float = 2.0) -> tuple[str, ...]:
    """Instance names (``gmm_0_0``...) of every python-backend model, from Triton's model config endpoint."""
    names = []
    for model in models or _served_models():
        config = _get_json(f"{base_url}/v2/models/{model}/config", timeout)
        if config.get("backend") != "python":
            continue  # a TensorRT network on GPU: no stub
        for group in config.get("instance_group", []):
            names.extend(f"{group['name']}_{i}" for i in range(int(group.get("count", 1))))
    return tuple(names)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process exited while we looked
        return b""


def _children(pid: int) -> list[tuple[int, str, list[str]]]:
    """(pid, state, argv) of the live processes whose parent is ``pid``."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat").decode("utf-8", "replace")
        # "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 2 or int(fields[1]) != pid:
            continue
        argv = [a.decode("utf-8", "replace") for a in _read(entry / "cmdline").split(b"\0") if a]
        out.append((int(entry.name), fields[0], argv))
    return out


def live_stubs(server_pid: int, expected: Iterable[str]) -> dict[str, int]:
    """Instance name -> pid of each stub child of ``server_pid`` that is alive (not a zombie)."""
    wanted = set(expected)
    alive = {}
    for pid, state, argv in _children(server_pid):
        if state in ("Z", "X") or not argv or not argv[0].endswith(STUB_BINARY):
            continue
        for arg in argv[1:]:  # the stub's arguments carry its instance name (e.g. gmm_0_1)
            if arg in wanted:
                alive[arg] = pid
    return alive


def find_server_pid() -> int:
    """The one tritonserver process visible here (PID 1 in the serving container)."""
    pids = [int(e.name) for e in _PROC.iterdir()
            if e.name.isdigit() and _read(e / "comm").strip() == b"tritonserver"]
    if len(pids) != 1:
        raise RuntimeError(f"expected one tritonserver process, found {len(pids)} ({pids}); pass --pid")
    return pids[0]


def stub_status(base_url: str, server_pid: int, timeout: float = 2.0) -> StubStatus:
    expected = python_instances(base_url, timeout=timeout)
    return StubStatus(expected, live_stubs(server_pid, expected))


def check(mode: str, host: str = "127.0.0.1", port: int = 8000, pid: int | None = None,
          timeout: float = 2.0) -> list[str]:
    """Problems found (empty: healthy). ``mode`` is ``live`` or ``ready``."""
    if mode not in ("live", "ready"):
        raise ValueError(f"mode must be 'live' or 'ready', got {mode!r}")
    base = f"http://{host}:{port}"
    code = _status(f"{base}/v2/health/{mode}", timeout)
    if code != 200:
        return [f"GET /v2/health/{mode} -> {code}"]
    try:
        status = stub_status(base, pid if pid is not None else find_server_pid(), timeout)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        return [f"cannot check python backend stubs: {exc}"]
    if status.missing:
        return [f"python backend stub process gone for instance(s) {', '.join(status.missing)} "
                f"({len(status.alive)}/{len(status.expected)} alive); Triton does not restart stubs, "
                "the server must be restarted"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drape-health", description=__doc__.split("\n\n")[0],
                                     epilog="Exit 0 healthy, 1 unhealthy (the reason on stderr).")
    parser.add_argument("mode", choices=("live", "ready"), help="live: /v2/health/live + stubs; ready: /v2/health/ready + stubs")
    parser.add_argument("--host", default="127.0.0.1", help="Triton HTTP host (default %(default)s)")
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("HTTP_PORT", 8000)),
                        help="Triton HTTP port (default $HTTP_PORT or 8000)")
    parser.add_argument("--pid", type=int, default=None, help="tritonserver pid (default: the only tritonserver process)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per HTTP call, seconds (default %(default)s)")
    args = parser.parse_args(argv)
    problems = check(args.mode, args.host, args.http_port, args.pid, args.timeout)
    for problem in problems:
        print(f"drape-health {args.mode}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
