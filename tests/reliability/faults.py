"""Faults under load: kill -9 a python-backend stub, kill or stop tritonserver, and measure what everyone sees.

``stub-kill``: one real tritonserver per target instance (free ports), a closed-loop load of both ensembles over
gRPC and HTTP through the thin client (no retries: every failure is counted), the real golden-request prober
(``drape_monitoring.prober``) probing every ``--prober-interval`` seconds, and a sampler of what Triton reports
(``/v2/health/ready``, ``/v2/health/live``, model readiness) and whether the stub process exists. Then
``SIGKILL`` the stub of the target instance (``gmm_0_0``: a network; ``recolor_preprocess_0_0``: pre-processing)
and watch for ``--observe-s`` seconds. Meanwhile the Kubernetes probes *as written in*
``k8s/base/triton-deployment.yaml`` are run on their schedule (an ``exec`` probe runs its command here with
``--http-port``/``--pid`` pointing at this server; an ``httpGet`` probe is a GET), so the report says whether
and when the manifest would take the pod out of the Service and restart it. Finally the kubelet's restart is
emulated: the load pauses (the Service sends it elsewhere), tritonserver gets SIGTERM and is started again on the
same ports, and the load resumes until ``--recover-s`` seconds without an error. Reported: the timeline relative
to the kill, client failures by class/status/message and their window, whether Triton restarted the stub itself,
probe verdicts, the prober's series over time, when each DrapeProber*/DrapeHighErrorRatio alert would fire (from
the measured failure fractions, the prober interval of the k8s manifest and the rules' ``for:``), the emulated
restart's durations, and /dev/shm regions left behind.

``server-restart``: load with the client's :class:`RetryPolicy` (``--attempts/--base-s/--cap-s``), then
``SIGKILL`` and/or ``SIGTERM`` the tritonserver and start it again on the same ports at once. tryon and recolor
are pure functions of their inputs, so every call is idempotent: the acceptance is 0 failed requests within the
retry budget. Reported: failures, retried requests and retries, max and p99 latency, the outage (signal ->
ready again) and the first success after it per protocol, and the retry budget's total backoff quantiles
(Monte Carlo) against the measured outage: if the budget is smaller, it says so.

Exit status: 0 when every acceptance holds (stub-kill: the server process survived, failures were
ServerError naming the dead instance and limited to the instances of the killed stub, no request hung, the
manifest's liveness probe tripped, service was error-free after the restart; server-restart: 0 failures).

Examples (from the repository root)::

    python -m tests.reliability.faults stub-kill --out build/reliability/faults
    python -m tests.reliability.faults stub-kill --targets gmm_0_0 --observe-s 40
    python -m tests.reliability.faults server-restart --signals KILL,TERM --attempts 40 --cap-s 2
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tests.reliability._sampling import PeriodicSampler

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPO = ROOT / "build" / "model_repository" / "cpu"
DEFAULT_OUT = ROOT / "build" / "reliability" / "faults"
SAMPLES = ROOT / "build" / "samples"
DEPLOYMENT = ROOT / "k8s" / "base" / "triton-deployment.yaml"
PROBER_DEPLOYMENT = ROOT / "k8s" / "base" / "prober-deployment.yaml"
RULES = ROOT / "monitoring" / "rules" / "drape.rules.yml"
PROMETHEUS = ROOT / "monitoring" / "prometheus.yml"
STUB_BINARY = "triton_python_backend_stub"
ENSEMBLES = ("tryon", "recolor")
PROTOCOLS = ("grpc", "http")


def _now() -> float:
    return time.monotonic()


# ------------------------------------------------------------------------------------------------ the load


_retries = threading.local()


def _retry_class():
    from drape_client import RetryPolicy

    class CountingRetry(RetryPolicy):
        """The client's RetryPolicy, counting this thread's retries (the client reports attempts only on failure)."""

        def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
            _retries.n = getattr(_retries, "n", 0) + 1
            return super().backoff_s(retry, rng)

    return CountingRetry


def counting_retry(attempts: int, base_s: float = 0.1, cap_s: float = 2.0):
    """A :class:`drape_client.RetryPolicy` whose retries are counted per call (see :attr:`Outcome.retries`)."""
    return _retry_class()(attempts=attempts, base_s=base_s, cap_s=cap_s)


@dataclass(frozen=True)
class Outcome:
    """One client call: when (seconds on the run's clock), through what, and how it ended."""

    start: float
    end: float
    lane: str
    protocol: str
    ensemble: str
    kind: str          # "ok" or the drape_client error class (ServerError, UnavailableError, ...)
    status: str = ""   # the error's transport status (StatusCode.INTERNAL, 500, ...)
    message: str = ""
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def latency(self) -> float:
        return self.end - self.start


def sample_pair() -> tuple[bytes, bytes]:
    """The sample person and garment photos `make serve` leaves in build/samples (small: fast requests)."""
    person, garment = SAMPLES / "person.jpg", SAMPLES / "garment.jpg"
    if not person.is_file() or not garment.is_file():
        raise SystemExit(f"faults: {SAMPLES}/person.jpg and garment.jpg are missing: run `make quick` first")
    return person.read_bytes(), garment.read_bytes()


class Load:
    """Closed-loop load: one thread per lane (protocol, ensemble), each with its own thin client.

    ``pause()`` stops sending (the Service routing traffic elsewhere); ``resume(reconnect=True)`` makes every lane
    open a fresh client, as a client reaching a restarted pod would.
    """

    def __init__(self, urls: dict[str, str], *, lanes: Sequence[tuple[str, str]] | None = None, threads_per_lane: int = 1,
                 retry=None, timeout_s: float = 30.0, origin: float | None = None,
                 pair: tuple[bytes, bytes] | None = None):
        from drape_client import NO_RETRY

        self.urls = dict(urls)
        self.lanes = list(lanes or [(p, e) for p in PROTOCOLS for e in ENSEMBLES])
        self.threads_per_lane = threads_per_lane
        self.retry = retry or NO_RETRY
        self.timeout_s = timeout_s
        self.origin = _now() if origin is None else origin
        self.pair = pair or sample_pair()
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._generation = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> "Load":
        for protocol, ensemble in self.lanes:
            for i in range(self.threads_per_lane):
                name = f"{protocol}-{ensemble}-{i}"
                t = threading.Thread(target=self._lane, args=(name, protocol, ensemble), name=name, daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._running.set()
        for t in self._threads:
            t.join(timeout)

    def pause(self) -> None:
        self._running.clear()

    def resume(self, reconnect: bool = True) -> None:
        if reconnect:
            self._generation += 1
        self._running.set()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def _lane(self, name: str, protocol: str, ensemble: str) -> None:
        from drape_client import DrapeClient, DrapeError

        client, generation = None, -1
        try:
            while not self._stop.is_set():
                self._running.wait()
                if self._stop.is_set():
                    break
                if generation != self._generation:
                    if client is not None:
                        client.close()
                    client, generation = DrapeClient(self.urls[protocol], protocol, self.timeout_s,
                                                     retry=self.retry), self._generation
                _retries.n = 0
                start = _now()
                try:
                    (client.tryon if ensemble == "tryon" else client.recolor)(*self.pair)
                    outcome = Outcome(start - self.origin, _now() - self.origin, name, protocol, ensemble, "ok",
                                      retries=_retries.n)
                except DrapeError as exc:
                    outcome = Outcome(start - self.origin, _now() - self.origin, name, protocol, ensemble,
                                      type(exc).__name__, str(exc.status), exc.reason, _retries.n)
                with self._lock:
                    self.outcomes.append(outcome)
        finally:
            if client is not None:
                client.close()


# ------------------------------------------------------------------------------------------- processes


def stub_processes(server_pid: int) -> dict[str, int]:
    """Instance name -> pid of every live (non-zombie) python-backend stub child of ``server_pid``."""
    import psutil

    out = {}
    try:
        children = psutil.Process(server_pid).children()
    except psutil.Error:
        return out
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            argv = child.cmdline()
        except psutil.Error:
            continue
        if argv and argv[0].endswith(STUB_BINARY) and len(argv) > 8:
            out[argv[8]] = child.pid  # stub argv: binary, model.py, shm region, sizes, parent pid, dir, ipc, NAME, kind
    return out


def wait_busy(pid: int, timeout_s: float = 20.0) -> bool:
    """Block until process ``pid`` burns CPU (it is executing a request); False after ``timeout_s``."""
    import psutil

    proc = psutil.Process(pid)
    deadline = _now() + timeout_s
    last = sum(proc.cpu_times()[:2])
    while _now() < deadline:
        time.sleep(0.02)
        cur = sum(proc.cpu_times()[:2])
        if cur - last >= 0.01:
            return True
        last = cur
    return False


def shm_prefix(handle) -> str:
    """The python backend's /dev/shm region prefix of a server started by drape_serving.server."""
    for arg in handle.command:
        if "shm-region-prefix-name=" in arg:
            return arg.split("shm-region-prefix-name=", 1)[1]
    raise ValueError("server command has no shm-region-prefix-name")


def shm_regions(prefix: str) -> list[Path]:
    return sorted(Path("/dev/shm").glob(prefix + "*"))


def reap_shm(prefix: str, wait_s: float = 20.0) -> dict:
    """Wait for orphaned stubs of a dead server to exit, then remove and report the regions they left behind."""
    deadline = _now() + wait_s
    while _now() < deadline and _orphan_stubs(prefix):
        time.sleep(0.5)
    regions = shm_regions(prefix)
    size = 0
    for path in regions:
        try:
            size += path.stat().st_size
            path.unlink()
        except OSError:
            pass
    return {"regions": len(regions), "bytes": size}


def shm_after_exit(prefix: str, grace_s: float = 5.0) -> dict:
    """/dev/shm a server left at its exit, and after its stubs had ``grace_s`` to clean up on their own.

    ``at_exit`` is what a container restart leaves in the pod's memory-backed /dev/shm volume: when tritonserver
    (PID 1) exits, the kernel kills the rest of the container at once, so no stub cleans up.
    """
    def size(paths: list[Path]) -> int:
        total = 0
        for path in paths:
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    at_exit = shm_regions(prefix)
    out = {"at_exit": {"regions": len(at_exit), "bytes": size(at_exit)}}
    deadline = _now() + grace_s
    while _now() < deadline and _orphan_stubs(prefix):
        time.sleep(0.2)
    later = shm_regions(prefix)
    out[f"after_{grace_s:g}s"] = {"regions": len(later), "bytes": size(later),
                                  "orphan_stubs": len(_orphan_stubs(prefix))}
    return out


def _orphan_stubs(prefix: str) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        if argv and argv[0].endswith(STUB_BINARY) and any(a.startswith(prefix) for a in argv):
            pids.append(proc.pid)
    return pids


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | str:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return type(getattr(exc, "reason", exc)).__name__


# ------------------------------------------------------------------------------------ kubernetes probes


@dataclass(frozen=True)
class ProbeSpec:
    """A container probe from the Triton Deployment manifest."""

    name: str                 # livenessProbe, readinessProbe
    command: tuple[str, ...]  # exec probes
    path: str                 # httpGet probes
    period_s: float
    timeout_s: float
    failure_threshold: int

    def run(self, host: str, http_port: int, pid: int) -> tuple[bool, str]:
        """Run the probe against this server: an exec command here, pointed at it; an httpGet as a GET."""
        if self.command:
            argv = list(self.command)
            if argv[0] in ("python3", "python"):
                argv[0] = sys.executable
            argv += ["--host", host, "--http-port", str(http_port), "--pid", str(pid)]
            try:
                run = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                return False, f"timed out after {self.timeout_s:g}s"
            return run.returncode == 0, (run.stderr or run.stdout).strip()[-300:]
        code = http_status(host, http_port, self.path, self.timeout_s)
        return code == 200, f"GET {self.path} -> {code}"


def manifest_probes(path: Path = DEPLOYMENT) -> dict[str, ProbeSpec]:
    """readinessProbe and livenessProbe of the triton container, with Kubernetes' defaults filled in."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    container = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")
    specs = {}
    for name in ("readinessProbe", "livenessProbe"):
        p = container[name]
        specs[name] = ProbeSpec(
            name, tuple(p.get("exec", {}).get("command", ())), p.get("httpGet", {}).get("path", ""),
            float(p.get("periodSeconds", 10)), float(p.get("timeoutSeconds", 1)), int(p.get("failureThreshold", 3)))
    return specs


def manifest_timing(path: Path = DEPLOYMENT) -> dict[str, float]:
    """The pod-restart costs the manifest adds to a liveness failure: preStop sleep and grace period."""
    import yaml

    spec = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "triton")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep_s = float(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0.0
    exit_timeout = next((float(a.split("=")[1]) for a in container["args"] if a.startswith("--exit-timeout-secs=")), 30.0)
    return {"pre_stop_sleep_s": sleep_s, "grace_period_s": float(spec.get("terminationGracePeriodSeconds", 30)),
            "exit_timeout_s": exit_timeout}


class ProbeRunner:
    """Runs the manifest's probes on their periods, like the kubelet, and records each verdict."""

    def __init__(self, specs: Iterable[ProbeSpec], host: str, port: int, pid: Callable[[], int], origin: float):
        self.specs = list(specs)
        self.host, self.port, self.pid, self.origin = host, port, pid, origin
        self.results: list[dict] = []
        self.tripped: dict[str, float] = {}  # probe -> run-clock time failureThreshold consecutive failures were reached
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(s,), daemon=True) for s in self.specs]

    def start(self) -> "ProbeRunner":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _loop(self, spec: ProbeSpec) -> None:
        failures = 0
        while not self._stop.is_set():
            started = _now()
            ok, detail = spec.run(self.host, self.port, self.pid())
            failures = 0 if ok else failures + 1
            t = _now() - self.origin
            self.results.append({"t": round(t, 2), "probe": spec.name, "ok": ok, "detail": "" if ok else detail})
            if failures >= spec.failure_threshold and spec.name not in self.tripped:
                self.tripped[spec.name] = t
            self._stop.wait(max(0.0, spec.period_s - (_now() - started)))


# --------------------------------------------------------------------------------------- state sampler


class StateSampler(PeriodicSampler):
    """What Triton says about itself, and whether the target's stub exists, every ``interval_s``."""

    def __init__(self, host: str, port: int, pid: Callable[[], int], models: Sequence[str], instance: str,
                 origin: float, interval_s: float = 0.5):
        super().__init__(interval_s)
        self.host, self.port, self.pid, self.models, self.instance = host, port, pid, list(models), instance
        self.origin = origin

    def sample(self) -> dict:
        s = {"t": round(_now() - self.origin, 2),
             "server_ready": http_status(self.host, self.port, "/v2/health/ready"),
             "server_live": http_status(self.host, self.port, "/v2/health/live")}
        for m in self.models:
            s[f"{m}_ready"] = http_status(self.host, self.port, f"/v2/models/{m}/ready")
        stubs = stub_processes(self.pid())
        s["stubs_alive"] = len(stubs)
        s[f"{self.instance}_stub"] = stubs.get(self.instance, 0)
        return s

    def changes(self) -> list[dict]:
        """Samples where anything but the time changed (stub pids reduced to present/absent)."""
        out, prev = [], None
        for s in self.samples:
            key = {k: (bool(v) if k.endswith("_stub") else v) for k, v in s.items() if k != "t"}
            if key != prev:
                out.append({"t": s["t"], **key})
                prev = key
        return out


# -------------------------------------------------------------------------------------------- the prober


class ProberRun:
    """The real golden-request prober (drape_monitoring.prober) against this server, on a short interval."""

    def __init__(self, grpc_url: str, golden_dir: Path, interval_s: float, origin: float):
        from drape_monitoring.prober import Prober, load_golden, make_client, record_golden

        person, garment = sample_pair()
        self.client = make_client(grpc_url, "grpc", 30.0)
        record_golden(self.client, {"tryon": {"person_image": person, "garment_image": garment},
                                    "recolor": {"on_model_image": person, "still_image": garment}}, golden_dir)
        self.prober = Prober(self.client, load_golden(golden_dir))
        self.interval_s, self.origin = interval_s, origin
        self.rounds: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.prober.run, args=(interval_s, self._stop, self._record), daemon=True)

    def start(self) -> "ProberRun":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.close()

    def pause(self) -> None:
        """Stop probing (the Service stops sending the prober to this pod)."""
        self.stop()

    def resume(self, grpc_url: str) -> None:
        """Probe again through a fresh connection (a restarted pod)."""
        from drape_monitoring.prober import make_client

        self.client = self.prober.client = make_client(grpc_url, "grpc", 30.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.prober.run, args=(self.interval_s, self._stop, self._record),
                                        daemon=True)
        self._thread.start()

    def _record(self, results) -> None:
        reg = self.prober.registry
        row = {"t": round(_now() - self.origin, 2), "ready": reg.get_sample_value("drape_prober_ready")}
        for r in results:
            row[r.ensemble] = r.result
            if r.error:
                row[f"{r.ensemble}_error"] = r.error[-160:]
            for result in ("ok", "mismatch", "error"):
                row[f"{r.ensemble}_{result}_total"] = reg.get_sample_value(
                    "drape_prober_probes_total", {"ensemble": r.ensemble, "result": result})
        self.rounds.append(row)


def triton_counts(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(successes, failures) per ensemble from Triton's own counters: what DrapeHighErrorRatio is computed from."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    counts = {e: [0.0, 0.0] for e in ENSEMBLES}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            name = sample.name.removesuffix("_total")  # the parser adds it to counters
            if model in counts and name in ("nv_inference_request_success", "nv_inference_request_failure"):
                counts[model][name.endswith("failure")] += sample.value
    return {e: (c[0], c[1]) for e, c in counts.items()}


def failure_fraction(before: dict, after: dict) -> dict[str, float]:
    out = {}
    for e in ENSEMBLES:
        ok, bad = after[e][0] - before[e][0], after[e][1] - before[e][1]
        out[e] = round(bad / (ok + bad), 3) if ok + bad else 0.0
    return out


# ------------------------------------------------------------------------------------------------ alerts


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def _alert_rules() -> dict[str, dict]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def alert_estimates(prober_fail: dict[str, float], traffic_fail: dict[str, float], prober_ready_false: bool,
                    degraded_s: float | None) -> list[dict]:
    """When each alert the failure can trip would fire, from measured failure fractions.

    Model: before the kill every probe/request succeeded; from the kill on, a fraction ``f`` fails (measured).
    A ratio over a window ``W`` (5m) then falls linearly: the failed share is ``f * min(t, W) / W``. The alert
    condition holds from ``t_c`` = W * threshold / f on (never if ``f`` cannot reach the threshold); the alert
    fires ``for:`` later, plus up to one rule-evaluation and one scrape interval (monitoring/prometheus.yml).
    ``degraded_s`` (None: until someone acts) cuts the failure off: a restart before ``t_c + for`` means no alert.
    """
    import yaml

    rules = _alert_rules()
    prom = yaml.safe_load(PROMETHEUS.read_text())["global"]
    lag = _duration_s(prom["evaluation_interval"]) + _duration_s(prom["scrape_interval"])
    prober_args = yaml.safe_load(PROBER_DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"][0]["args"]
    prober_interval = next(float(a.split("=")[1]) for a in prober_args if a.startswith("--interval="))
    out = []

    def ratio_alert(alert: str, ensemble: str, f: float, fail_threshold: float, window_s: float, kind: str) -> None:
        rule = rules[alert]
        hold = _duration_s(rule.get("for", "0s"))
        row = {"alert": alert, "ensemble": ensemble, "measured_failure_fraction": round(f, 3),
               "condition": " ".join(rule["expr"].split()), "for_s": hold, "source": kind}
        if f <= fail_threshold:
            row.update(fires_after_s=None, why=f"failure fraction {f:.2f} never exceeds {fail_threshold:g}")
        else:
            t_c = window_s * fail_threshold / f
            fire = t_c + hold + lag + (prober_interval if kind == "prober" else 0.0)
            if degraded_s is not None and degraded_s < t_c + hold:
                row.update(fires_after_s=None, why=f"degraded for {degraded_s:.0f}s < {t_c + hold:.0f}s needed")
            else:
                row.update(fires_after_s=round(fire), why=f"condition from {t_c:.0f}s, + for {hold:.0f}s + "
                                                         f"<= {lag:.0f}s evaluation/scrape lag")
        out.append(row)

    failing = rules["DrapeProberFailing"]["expr"]
    m = re.search(r"<\s*([0-9.]+)", failing)
    ok_threshold = float(m.group(1)) if m else 0.5
    for ensemble, f in prober_fail.items():
        ratio_alert("DrapeProberFailing", ensemble, f, 1.0 - ok_threshold, 300.0, "prober")
    high = rules["DrapeHighErrorRatio"]["expr"]
    m = re.search(r">\s*([0-9.]+)", high)
    err_threshold = float(m.group(1)) if m else 0.05
    for ensemble, f in traffic_fail.items():
        ratio_alert("DrapeHighErrorRatio", ensemble, f, err_threshold, 300.0, "traffic")
    ready_rule = rules["DrapeModelNotReady"]
    hold = _duration_s(ready_rule.get("for", "0s"))
    out.append({"alert": "DrapeModelNotReady", "ensemble": "*", "condition": ready_rule["expr"], "for_s": hold,
                "source": "prober", "fires_after_s": round(hold + prober_interval + lag) if prober_ready_false else None,
                "why": "drape_prober_ready went 0" if prober_ready_false else
                "drape_prober_ready stayed 1: Triton reports the server and models ready with a dead stub"})
    return out


# ------------------------------------------------------------------------------------------ stub kill


@dataclass
class StubKillConfig:
    repo: Path = DEFAULT_REPO
    targets: tuple[str, ...] = ("gmm_0_0", "recolor_preprocess_0_0")
    threads_per_lane: int = 1
    warm_s: float = 8.0
    observe_s: float = 35.0
    recover_s: float = 10.0
    prober_interval_s: float = 2.0
    when_busy: bool = True
    restart: bool = True
    out: Path = DEFAULT_OUT


def _model_of(instance: str) -> str:
    return instance.rsplit("_", 2)[0]


def _ensembles_using(model: str) -> list[str]:
    from drape_core import contract

    return [s.name for s in contract.ENSEMBLES.values()
            if model in (s.preprocess_model, s.postprocess_model, *s.networks)]


def _failure_groups(outcomes: Iterable[Outcome]) -> list[dict]:
    groups: Counter = Counter()
    for o in outcomes:
        if not o.ok:
            groups[(o.kind, o.status, o.message[:200])] += 1
    return [{"kind": k, "status": s, "message": m, "count": n} for (k, s, m), n in groups.most_common()]


def stub_kill(target: str, cfg: StubKillConfig, log=print) -> dict:
    """One server, one killed stub, the whole story as a dict (see the module docstring)."""
    from drape_serving import health
    from drape_serving.server import start_server

    out_dir = cfg.out / f"stub-kill-{target}"
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _model_of(target)
    probes = manifest_probes()
    timing = manifest_timing()
    server = start_server(cfg.repo, log_file=out_dir / "tritonserver.log", ready_timeout=240)
    prefixes = [shm_prefix(server)]
    current = {"server": server}
    origin = _now()
    report: dict = {"target": target, "model": model, "repo": str(cfg.repo),
                    "probes": {k: asdict(v) for k, v in probes.items()}, "manifest_timing": timing}
    load = sampler = runner = prober = None
    try:
        stubs = stub_processes(server.process.pid)
        if target not in stubs:
            raise SystemExit(f"faults: no stub for instance {target!r}; running: {sorted(stubs)}")
        report["stubs_before"] = len(stubs)
        report["health_before"] = health.check("live", server.host, server.http_port, server.process.pid)
        with tempfile.TemporaryDirectory() as golden:
            prober = ProberRun(server.grpc_url, Path(golden), cfg.prober_interval_s, origin)
        pid = lambda: current["server"].process.pid  # noqa: E731
        sampler = StateSampler(server.host, server.http_port, pid, [model, *_ensembles_using(model)], target,
                               origin).start()
        urls = {"grpc": server.grpc_url, "http": server.http_url}
        load = Load(urls, threads_per_lane=cfg.threads_per_lane, origin=origin).start()
        prober.start()
        time.sleep(cfg.warm_s)
        busy = wait_busy(stubs[target]) if cfg.when_busy else False
        counts_at_kill = triton_counts(server.metrics_url)
        os.kill(stubs[target], signal.SIGKILL)
        t_kill = _now() - origin
        log(f"  killed {target} (pid {stubs[target]}) at t={t_kill:.2f}s{' while it was executing' if busy else ''}")
        runner = ProbeRunner(probes.values(), server.host, server.http_port, pid, origin).start()
        time.sleep(cfg.observe_s)
        t_observed = _now() - origin
        report["triton_failure_fraction"] = failure_fraction(counts_at_kill, triton_counts(server.metrics_url))
        report.update(kill_t=round(t_kill, 2), killed_while_busy=busy, observed_until_t=round(t_observed, 2),
                      server_alive_after_kill=server.is_running(),
                      stub_back_before_restart=bool(stub_processes(server.process.pid).get(target)),
                      health_after_kill=health.check("live", server.host, server.http_port, server.process.pid))
        if cfg.restart:
            report["restart"] = _emulated_restart(current, cfg, out_dir, load, prober, origin, prefixes, log)
        t_end = _now() - origin
    finally:
        for part in (runner, load, prober, sampler):
            if part is not None:
                part.stop()
        current["server"].stop()
        report["shm_left_behind"] = {p: reap_shm(p) for p in prefixes}
    outcomes = load.snapshot()
    report["clients"] = _client_story(outcomes, t_kill, report.get("restart", {}).get("resumed_t", t_end), model)
    report["timeline"] = [{**c, "t_rel_kill": round(c["t"] - t_kill, 2)} for c in sampler.changes()]
    report["probe_results"] = [{**r, "t_rel_kill": round(r["t"] - t_kill, 2)} for r in runner.results]
    report["probe_tripped_after_kill_s"] = {k: round(v - t_kill, 2) for k, v in runner.tripped.items()}
    report["prober_rounds"] = [{**r, "t_rel_kill": round(r["t"] - t_kill, 2)} for r in prober.rounds]
    report["prober_fail_fraction"] = _prober_fail_fraction(prober.rounds, t_kill, report["observed_until_t"])
    traffic = report["triton_failure_fraction"]  # load and prober requests, as Triton's counters (and the rule) see them
    ready_false = any(r.get("ready") == 0 for r in prober.rounds if t_kill <= r["t"] <= report["observed_until_t"])
    report["alerts_if_never_restarted"] = alert_estimates(report["prober_fail_fraction"], traffic, ready_false, None)
    detect = report["probe_tripped_after_kill_s"].get("livenessProbe")
    restart = report.get("restart", {})
    if detect is not None and restart:
        # Shutting down with a dead stub runs into Triton's exit timeout: in k8s that is the manifest's.
        shutdown = timing["exit_timeout_s"] if restart["shutdown_hit_exit_timeout"] else restart["shutdown_s"]
        k8s = detect + timing["pre_stop_sleep_s"] + shutdown + restart["startup_s"]
        report["k8s_recovery_estimate_s"] = round(k8s, 1)
        report["alerts_with_liveness_restart"] = alert_estimates(report["prober_fail_fraction"], traffic,
                                                                 ready_false, k8s)
    report["acceptance"] = _stub_kill_acceptance(report, target)
    _write_rows(out_dir / "requests.csv", [asdict(o) for o in outcomes])
    _write_rows(out_dir / "states.csv", sampler.samples)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _emulated_restart(current: dict, cfg: StubKillConfig, out_dir: Path, load: Load, prober: ProberRun,
                      origin: float, prefixes: list[str], log) -> dict:
    """What the kubelet does after the liveness probe trips: SIGTERM, wait, start the container again.

    Before that, readiness has failed, so the Service sends neither the load nor the prober here any more (under
    traffic Triton 2.51 keeps accepting requests after SIGTERM and always runs into its exit timeout).
    """
    from drape_serving.server import start_server

    old = current["server"]
    load.pause()
    prober.pause()
    time.sleep(1.0)  # let calls already in flight finish
    t0 = _now()
    old.process.send_signal(signal.SIGTERM)
    old.process.wait(120)
    shutdown = _now() - t0
    left = shm_after_exit(shm_prefix(old))
    old.stop()
    t1 = _now()
    new = start_server(cfg.repo, old.http_port, old.grpc_port, old.metrics_port,
                       log_file=out_dir / "tritonserver-restarted.log", ready_timeout=240)
    current["server"] = new
    prefixes.append(shm_prefix(new))
    startup = _now() - t1
    load.resume(reconnect=True)
    prober.resume(new.grpc_url)
    resumed = _now() - origin
    log(f"  restarted like the kubelet: SIGTERM->exit {shutdown:.1f}s (code {old.process.returncode}), "
        f"start->ready {startup:.1f}s")
    deadline = _now() + cfg.recover_s + 60
    clean_from = resumed
    while _now() < deadline:  # until recover_s seconds with answers and no error
        time.sleep(0.5)
        after = [o for o in load.snapshot() if o.start >= resumed]
        clean_from = max([resumed] + [o.end for o in after if not o.ok])
        answered = any(o.ok and o.start >= clean_from for o in after) or not load.threads_per_lane
        if answered and _now() - origin - clean_from >= cfg.recover_s:
            break
    from drape_serving import health

    log_text = old.log_file.read_text(errors="replace") if old.log_file else ""
    return {"shutdown_s": round(shutdown, 2), "exit_code": old.process.returncode,
            "shutdown_hit_exit_timeout": "Exit timeout expired" in log_text, "shm_left": left,
            "startup_s": round(startup, 2),
            "resumed_t": round(resumed, 2), "error_free_from_resume_s": round(clean_from - resumed, 2),
            "error_free_window_s": round(_now() - origin - clean_from, 2), "recover_s": cfg.recover_s,
            "stubs_after": len(stub_processes(new.process.pid)),
            "health_after": health.check("live", new.host, new.http_port, new.process.pid)}


def _client_story(outcomes: list[Outcome], t_kill: float, t_resume: float, model: str) -> dict:
    before = [o for o in outcomes if o.end < t_kill]
    during = [o for o in outcomes if o.end >= t_kill and o.start < t_resume]
    after = [o for o in outcomes if o.start >= t_resume]
    failed = [o for o in during if not o.ok]
    by_ens = {}
    for e in ENSEMBLES:
        d = [o for o in during if o.ensemble == e]
        by_ens[e] = round(sum(not o.ok for o in d) / len(d), 3) if d else 0.0
    ok_during = [o for o in during if o.ok]
    return {
        "requests": len(outcomes), "failed_before_kill": sum(not o.ok for o in before),
        "during": {"requests": len(during), "failed": len(failed), "ok": len(ok_during)},
        "failure_groups": _failure_groups(during),
        "failed_ensembles": sorted({o.ensemble for o in failed}),
        "first_failure_after_kill_s": round(min(o.end for o in failed) - t_kill, 2) if failed else None,
        "last_failure_after_kill_s": round(max(o.end for o in failed) - t_kill, 2) if failed else None,
        "failed_latency_s": {"max": round(max(o.latency for o in failed), 2),
                             "median": round(statistics.median(o.latency for o in failed), 2)} if failed else None,
        "ok_latency_s_max": round(max((o.latency for o in ok_during), default=0.0), 2),
        "failure_fraction_by_ensemble": by_ens,
        "after_restart": {"requests": len(after), "failed": sum(not o.ok for o in after),
                          "failure_groups": _failure_groups(after),
                          "first_success_after_resume_s": round(min((o.end for o in after if o.ok), default=math.nan)
                                                                - t_resume, 2) if after else None},
    }


def _prober_fail_fraction(rounds: list[dict], t_kill: float, t_until: float) -> dict[str, float]:
    out = {}
    for e in ENSEMBLES:
        seen = [r[e] for r in rounds if t_kill <= r["t"] <= t_until and e in r]
        out[e] = round(sum(v != "ok" for v in seen) / len(seen), 3) if seen else 0.0
    return out


def _stub_kill_acceptance(r: dict, target: str) -> dict[str, bool]:
    c = r["clients"]
    model = r["model"]
    groups = c["failure_groups"]
    restart = r.get("restart", {})
    expected_ens = set(_ensembles_using(model))
    loaded = c["requests"] > 0  # --threads-per-lane 0: the prober alone, no client story to check
    return {
        "server process survived the stub kill": bool(r["server_alive_after_kill"]),
        "failures are ServerError naming the killed instance": not loaded or bool(groups) and all(
            g["kind"] == "ServerError" and target in g["message"] for g in groups),
        "only ensembles using the killed model failed": set(c["failed_ensembles"]) <= expected_ens,
        "no request hung (failed within 10 s)": (c["failed_latency_s"] or {"max": 0})["max"] < 10.0,
        "health check passed before and fails after the kill": not r["health_before"] and bool(r["health_after_kill"]),
        "manifest liveness probe tripped": "livenessProbe" in r["probe_tripped_after_kill_s"],
        "manifest readiness probe tripped": "readinessProbe" in r["probe_tripped_after_kill_s"],
        "error-free after the restart": not restart or (restart["error_free_window_s"] >= restart["recover_s"]
                                                       and (c["after_restart"]["requests"] > 0 or not loaded)
                                                       and not restart["health_after"]),
    }


# --------------------------------------------------------------------------------------- server restart


def budget_quantiles(policy, trials: int = 20000, seed: int = 0) -> dict[str, float]:
    """Total backoff a call can wait across all its retries (full jitter), as quantiles: what it can ride out."""
    rng = random.Random(seed)
    totals = sorted(sum(policy.backoff_s(i, rng) for i in range(policy.attempts - 1)) for _ in range(trials))
    q = lambda p: round(totals[min(len(totals) - 1, int(p * len(totals)))], 2)  # noqa: E731
    return {"p01": q(0.01), "p05": q(0.05), "p50": q(0.5), "max": round(totals[-1], 2)}


@dataclass
class RestartConfig:
    repo: Path = DEFAULT_REPO
    signals: tuple[str, ...] = ("KILL", "TERM")
    attempts: int = 40
    base_s: float = 0.1
    cap_s: float = 2.0
    threads_per_lane: int = 1
    warm_s: float = 5.0
    after_s: float = 8.0
    timeout_s: float = 60.0
    out: Path = DEFAULT_OUT


def restart_once(server, sig: signal.Signals, load: Load, cfg: RestartConfig, out_dir: Path, origin: float,
                 prefixes: list[str], log=print):
    """Signal the server under load, start it again on the same ports at once; (new server, measurements)."""
    from drape_serving.server import ServerStartError, start_server

    t_sig = _now()
    server.process.send_signal(sig)
    server.process.wait(120)
    t_exit = _now()
    left = shm_after_exit(shm_prefix(server), grace_s=0)["at_exit"]  # no waiting: the clients are waiting
    server.stop()  # kills the stubs a SIGKILLed tritonserver leaves behind (as the container runtime would)
    new, tries = None, 0
    while new is None:
        tries += 1
        try:
            new = start_server(cfg.repo, server.http_port, server.grpc_port, server.metrics_port,
                               log_file=out_dir / f"tritonserver-after-{sig.name}.log", ready_timeout=240)
        except ServerStartError:
            if tries >= 3:  # e.g. a port still held: say so rather than loop
                raise
            time.sleep(1.0)
    t_ready = _now()
    prefixes.append(shm_prefix(new))
    log(f"  {sig.name}: exited after {t_exit - t_sig:.1f}s (code {server.process.returncode}), "
        f"ready again {t_ready - t_sig:.1f}s after the signal")
    time.sleep(cfg.after_s)
    return new, {"signal": sig.name, "signal_t": round(t_sig - origin, 2), "exit_after_s": round(t_exit - t_sig, 2),
                 "exit_code": server.process.returncode, "ready_after_s": round(t_ready - t_sig, 2),
                 "startup_s": round(new.startup_s, 2), "start_tries": tries, "shm_left": left}


def server_restart(cfg: RestartConfig, log=print) -> dict:
    from drape_serving.server import free_ports, start_server

    out_dir = cfg.out / "server-restart"
    out_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3)
    server = start_server(cfg.repo, *ports, log_file=out_dir / "tritonserver.log", ready_timeout=240)
    prefixes = [shm_prefix(server)]
    policy = counting_retry(cfg.attempts, cfg.base_s, cfg.cap_s)
    origin = _now()
    load = Load({"grpc": server.grpc_url, "http": server.http_url}, threads_per_lane=cfg.threads_per_lane,
                retry=policy, timeout_s=cfg.timeout_s, origin=origin).start()
    variants = []
    try:
        time.sleep(cfg.warm_s)
        for name in cfg.signals:
            server, v = restart_once(server, signal.Signals[f"SIG{name}"], load, cfg, out_dir, origin, prefixes, log)
            variants.append(v)
    finally:
        load.stop()
        server.stop()
        shm = {p: reap_shm(p) for p in prefixes}
    outcomes = load.snapshot()
    for i, v in enumerate(variants):
        t0 = v["signal_t"]
        t1 = variants[i + 1]["signal_t"] if i + 1 < len(variants) else math.inf
        v.update(_restart_story([o for o in outcomes if t0 - 30 <= o.end and o.start < t1], t0, t0 + v["ready_after_s"]))
    budget = budget_quantiles(policy)
    # Unanswered: from the process exit (under SIGTERM Triton keeps answering until then) to the first success.
    outage = max((v["ready_after_s"] - v["exit_after_s"] + max(v["first_success_after_ready_s"].values(), default=0.0)
                  for v in variants), default=0.0)
    report = {
        "policy": {"attempts": cfg.attempts, "base_s": cfg.base_s, "cap_s": cfg.cap_s},
        "budget_total_backoff_s": budget, "longest_unanswered_s": round(outage, 2),
        "budget_covers_outage": budget["p01"] >= outage,
        "requests": len(outcomes), "failed": sum(not o.ok for o in outcomes),
        "failure_groups": _failure_groups(outcomes), "variants": variants, "shm_left_behind": shm,
    }
    _write_rows(out_dir / "requests.csv", [asdict(o) for o in outcomes])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _restart_story(outcomes: list[Outcome], t_sig: float, t_ready: float) -> dict:
    touched = [o for o in outcomes if o.end >= t_sig]
    lat = sorted(o.latency for o in touched) or [0.0]
    first_ok = {}
    for p in PROTOCOLS:
        oks = [o.end for o in touched if o.ok and o.protocol == p and o.end >= t_ready]
        first_ok[p] = round(min(oks) - t_ready, 2) if oks else math.nan
    return {"requests": len(touched), "failed": sum(not o.ok for o in touched),
            "retried_requests": sum(o.retries > 0 for o in touched), "retries": sum(o.retries for o in touched),
            "max_retries": max((o.retries for o in touched), default=0),
            "latency_max_s": round(lat[-1], 2), "latency_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 2),
            "first_success_after_ready_s": first_ok}


# ------------------------------------------------------------------------------------------------- output


def _write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _print_stub_kill(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    c = r["clients"]
    con.print(f"[bold]stub kill {r['target']}[/] at t={r['kill_t']}s (busy: {r['killed_while_busy']}); "
              f"server alive: {r['server_alive_after_kill']}; Triton restarted the stub: {r['stub_back_before_restart']}")
    t = Table(title="Triton's own view over time (s after the kill)")
    keys = [k for k in r["timeline"][0] if k not in ("t", "t_rel_kill")] if r["timeline"] else []
    t.add_column("t")
    for k in keys:
        t.add_column(k)
    for row in r["timeline"]:
        t.add_row(f"{row['t_rel_kill']:+.2f}", *[str(row[k]) for k in keys])
    con.print(t)
    t = Table(title="client failures between the kill and the restart")
    for col in ("count", "kind", "status", "message"):
        t.add_column(col)
    for g in c["failure_groups"]:
        t.add_row(str(g["count"]), g["kind"], g["status"], g["message"][:110])
    con.print(t)
    con.print(f"during: {c['during']}; failure fraction {c['failure_fraction_by_ensemble']}; first/last failure "
              f"{c['first_failure_after_kill_s']}/{c['last_failure_after_kill_s']}s after the kill; failed latency "
              f"{c['failed_latency_s']}; after restart {c['after_restart']}")
    con.print(f"probes tripped (s after kill): {r['probe_tripped_after_kill_s']}; prober failure fraction "
              f"{r['prober_fail_fraction']}; restart {r.get('restart')}; k8s recovery estimate "
              f"{r.get('k8s_recovery_estimate_s')}s; shm left behind {r['shm_left_behind']}")
    t = Table(title="alerts if the pod were never restarted (s after the kill)")
    for col in ("alert", "ensemble", "f", "fires after", "why"):
        t.add_column(col)
    for a in r["alerts_if_never_restarted"]:
        t.add_row(a["alert"], a["ensemble"], str(a.get("measured_failure_fraction", "")), str(a["fires_after_s"]), a["why"])
    con.print(t)
    for k, ok in r["acceptance"].items():
        con.print(f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {k}")


def _print_restart(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    t = Table(title=f"server restart under load, retry policy {r['policy']}")
    for col in ("signal", "exit after s", "exit code", "ready after s", "requests", "failed", "retried",
                "retries", "max retries", "max latency s", "p99 s", "first ok after ready s"):
        t.add_column(col)
    for v in r["variants"]:
        t.add_row(v["signal"], str(v["exit_after_s"]), str(v["exit_code"]), str(v["ready_after_s"]),
                  str(v["requests"]), str(v["failed"]), str(v["retried_requests"]), str(v["retries"]),
                  str(v["max_retries"]), str(v["latency_max_s"]), str(v["latency_p99_s"]),
                  str(v["first_success_after_ready_s"]))
    con.print(t)
    con.print(f"total: {r['requests']} requests, {r['failed']} failed {r['failure_groups']}; retry budget total "
              f"backoff {r['budget_total_backoff_s']} vs longest unanswered stretch {r['longest_unanswered_s']}s -> "
              f"{'covers it' if r['budget_covers_outage'] else 'TOO SMALL: raise attempts or cap_s'}; "
              f"shm left behind {r['shm_left_behind']}")


# ---------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.faults", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sk = sub.add_parser("stub-kill", help="SIGKILL a python-backend stub under load; measure clients, readiness, probes, prober, recovery")
    sk.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="model repository (default %(default)s)")
    sk.add_argument("--targets", default="gmm_0_0,recolor_preprocess_0_0",
                    help="comma-separated instance names to kill, one server each (default %(default)s)")
    sk.add_argument("--threads-per-lane", type=int, default=1, help="threads per (protocol, ensemble) lane (default 1: 4 threads; 0: the prober alone)")
    sk.add_argument("--warm-s", type=float, default=8.0, help="load before the kill (default %(default)s)")
    sk.add_argument("--observe-s", type=float, default=35.0,
                    help="seconds to watch after the kill, before the emulated kubelet restart (default %(default)s)")
    sk.add_argument("--recover-s", type=float, default=10.0, help="error-free seconds wanted after the restart")
    sk.add_argument("--prober-interval", type=float, default=2.0, help="prober interval here (k8s: 15 s) (default %(default)s)")
    sk.add_argument("--no-busy-wait", action="store_true", help="kill at once instead of while the stub executes")
    sk.add_argument("--no-restart", action="store_true", help="skip the emulated kubelet restart")
    sk.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default %(default)s)")
    sr = sub.add_parser("server-restart", help="SIGKILL/SIGTERM tritonserver under load with client retries; restart on the same ports")
    sr.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    sr.add_argument("--signals", default="KILL,TERM", help="comma-separated, in order (default %(default)s)")
    sr.add_argument("--attempts", type=int, default=40, help="RetryPolicy.attempts (default %(default)s)")
    sr.add_argument("--base-s", type=float, default=0.1, help="RetryPolicy.base_s (default %(default)s)")
    sr.add_argument("--cap-s", type=float, default=2.0, help="RetryPolicy.cap_s (default %(default)s)")
    sr.add_argument("--threads-per-lane", type=int, default=1)
    sr.add_argument("--after-s", type=float, default=8.0, help="load after each restart (default %(default)s)")
    sr.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stub-kill":
        cfg = StubKillConfig(args.repo, tuple(t for t in args.targets.split(",") if t), args.threads_per_lane,
                             args.warm_s, args.observe_s, args.recover_s, args.prober_interval, not args.no_busy_wait,
                             not args.no_restart, args.out)
        reports = []
        for target in cfg.targets:
            print(f"faults: stub-kill {target}", flush=True)
            reports.append(stub_kill(target, cfg))
            _print_stub_kill(reports[-1])
        (cfg.out / "stub-kill.json").write_text(json.dumps(reports, indent=2, default=str) + "\n")
        ok = all(all(r["acceptance"].values()) for r in reports)
    else:
        cfg = RestartConfig(args.repo, tuple(s.strip().upper().removeprefix("SIG") for s in args.signals.split(",")),
                            args.attempts, args.base_s, args.cap_s, args.threads_per_lane, after_s=args.after_s,
                            out=args.out)
        report = server_restart(cfg)
        _print_restart(report)
        ok = report["failed"] == 0
    print(f"faults: {'OK' if ok else 'FAILED'} (reports in {args.out})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
