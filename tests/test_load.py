"""Locust load test, bounded: real locust (headless subprocess) against a real tritonserver on free ports.

The run in `make test` is small (2 users, 15 s, small payloads) and gates on failures only: latency budgets are
for `make load` on a quiet machine, never for unit tests.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never `import locust` in the pytest process: it monkey-patches socket/threading for gevent at import time, and
# every later test that runs a gRPC server or client in-process would then hang. Locust runs as a subprocess.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "client" / "locustfile.py"
CHECK = ROOT / "client" / "load_check.py"
LOCUST = Path(sys.executable).with_name("locust")


def _load_check():
    spec = importlib.util.spec_from_file_location("load_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_check"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _locust(out: Path, env: dict[str, str], seconds: int, *extra: str) -> subprocess.CompletedProcess:
    """Headless locust, 2 users (one per user class); leaves <out>/drape_*.csv and report.html."""
    base = {k: v for k, v in os.environ.items() if k not in ("TRITON_GRPC_URL", "TRITON_HTTP_URL")}
    cmd = [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2", "-t", f"{seconds}s",
           "--stop-timeout", "30", "--csv", str(out / "drape"), "--html", str(out / "report.html"), "--only-summary",
           *extra]
    return subprocess.run(cmd, env={**base, "DRAPE_LOAD_SIZES": "333x250:3,1024x768:1", **env},
                          capture_output=True, text=True, timeout=seconds + 120)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "drape_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.server
@pytest.mark.slow
def test_bounded_load_against_the_real_server(real_server, tmp_path):
    run = _locust(tmp_path, {"TRITON_GRPC_URL": real_server.grpc_url, "TRITON_HTTP_URL": real_server.http_url}, 15)
    rows = _rows(tmp_path)
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, run.stderr[-2000:]
    assert int(total["Failure Count"]) == 0, (tmp_path / "drape_failures.csv").read_text()
    named = [(r["Type"], r["Name"].split()[0]) for r in rows if r["Name"] != "Aggregated"]
    assert {(p, e) for p in ("grpc", "http") for e in ("tryon", "recolor")} <= set(named)
    for r in rows:  # real latencies and response sizes were recorded (a 333x250 RGB answer is 250 kB)
        assert float(r["Average Response Time"]) > 0 and float(r["Average Content Size"]) >= 333 * 250 * 3
    assert (tmp_path / "report.html").stat().st_size > 0
    gate = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "drape_stats.csv")], capture_output=True,
                          text=True)
    assert gate.returncode == 0 and "load_check: OK" in gate.stdout, gate.stdout + gate.stderr


@pytest.mark.slow
def test_gate_fails_when_requests_fail(tmp_path):
    """gRPC users hit a closed port, HTTP users have no target at all: both show up as failures, the gate says no."""
    from drape_serving.server import free_port

    # long enough for the gRPC user to build its payloads on a busy 2-core machine before its first request
    _locust(tmp_path, {"TRITON_GRPC_URL": f"127.0.0.1:{free_port()}"}, 12)
    gate = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "drape_stats.csv")], capture_output=True,
                          text=True)
    assert gate.returncode == 1 and "requests failed" in gate.stderr
    failures = (tmp_path / "drape_failures.csv").read_text()
    assert "no http target" in failures and "UnavailableError" in failures


def test_gate_logic():
    lc = _load_check()
    row = lambda name, n, fails, p95: lc.Row("grpc", name, n, fails, 100.0, p95, p95, 1.0)  # noqa: E731
    good = [row("tryon 333x250 jpeg", 10, 0, 900.0), row("Aggregated", 10, 0, 900.0)]
    assert lc.check(good, p95_ms=1000, min_requests=1) == []
    assert lc.check(good, p95_ms=None, min_requests=1) == []
    assert "exceeds" in lc.check(good, p95_ms=800, min_requests=1)[0]
    assert "only 10 requests" in lc.check(good, p95_ms=None, min_requests=11)[0]
    assert "failed" in lc.check([row("Aggregated", 10, 1, 900.0)], p95_ms=None, min_requests=1)[0]
    assert "no p95" in lc.check([row("Aggregated", 0, 0, None)], p95_ms=1000, min_requests=0)[0]
    assert lc.check([row("tryon", 1, 0, 1.0)], None, 1) == ["no 'Aggregated' row in the stats CSV"]
    missing = subprocess.run([sys.executable, str(CHECK), "/nonexistent/drape_stats.csv"], capture_output=True)
    assert missing.returncode == 1
