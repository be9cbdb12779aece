"""Soak: a bounded headless locust run at saturation, watching the server's memory for leaks.

Runs the project's locust users (client/locustfile.py: gRPC and HTTP users, tryon and recolor, a mix of image
sizes and formats, no retries, no think time here) against a tritonserver this script starts (or ``--grpc-url``
/ ``--http-url`` with ``--pid``). Saturation is found first, unless ``--users`` is given: short steps at 2, 4,
8, 16 users until throughput stops rising (less than ``--rise`` more requests/s than the step before); the
soak runs at that user count. Every ``--sample-s`` seconds it samples the memory of tritonserver and all its
python-backend stub children (RSS and PSS from /proc via psutil; PSS splits the /dev/shm pages they share) and
the stub pids.

Acceptance (exit 1 on any violation, the numbers printed either way):

* 0 failed requests (locust stats) and at least ``--min-requests``;
* RSS growth of server + stubs from minute ``--baseline-min`` (default 2) to the end <= ``--max-growth``
  (default 10%); each end is the mean of the samples in a 30 s window;
* the same stub processes at the end as at the start (none died or was replaced).

Writes ``<out>/memory.csv`` (one row per sample), ``<out>/locust_*.csv`` and ``<out>/soak.json``.

Examples (from the repository root)::

    python -m tests.reliability.soak --minutes 10                          # the recorded run (finds saturation)
    python -m tests.reliability.soak --minutes 1 --users 2 --baseline-min 0.25   # a smoke run
    python -m tests.reliability.soak --grpc-url host:8001 --http-url host:8000 --pid 1234 --users 4
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.reliability._sampling import PeriodicSampler

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPO = ROOT / "build" / "model_repository" / "cpu"
DEFAULT_OUT = ROOT / "build" / "reliability" / "soak"
LOCUSTFILE = ROOT / "client" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")
STUB_BINARY = "triton_python_backend_stub"
WINDOW_S = 30.0
BREAKDOWN = ("server_anon", "server_shmem", "stubs_anon", "stubs_shmem", "total_file", "shm_bytes")


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    users: int | None = None          # None: find saturation
    step_s: float = 45.0
    max_users: int = 16
    rise: float = 0.10
    sample_s: float = 5.0
    baseline_min: float = 2.0
    max_growth: float = 0.10
    min_requests: int = 10
    sizes: str | None = None          # DRAPE_LOAD_SIZES override
    out: Path = DEFAULT_OUT


# ------------------------------------------------------------------------------------------------ memory


@dataclass(frozen=True)
class MemorySample:
    t: float
    server_rss: int
    stubs_rss: int
    total_rss: int
    total_pss: int
    stubs: int
    stub_pids: str  # space-separated, sorted
    # where the RSS lives (/proc/<pid>/status): private heap (RssAnon), shared memory pages touched (RssShmem:
    # the python backend's /dev/shm regions, counted in every process that touched them), mapped files (RssFile)
    server_anon: int = 0
    server_shmem: int = 0
    stubs_anon: int = 0
    stubs_shmem: int = 0
    total_file: int = 0
    shm_bytes: int = 0         # bytes allocated in /dev/shm by this server's regions (each page counted once)
    stub_anon_detail: str = ""  # "instance=bytes ..." per stub: which model's stub grows

    def stub_anon(self) -> dict[str, int]:
        return {k: int(v) for k, v in (item.split("=") for item in self.stub_anon_detail.split())}

    @property
    def stub_set(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.stub_pids.split())


def sample_memory(server_pid: int, t: float) -> MemorySample:
    """RSS/PSS of tritonserver and every python-backend stub it started."""
    import psutil

    server = psutil.Process(server_pid)
    procs = [server] + [c for c in server.children() if _is_stub(c)]
    rss, pss = [], []
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            info = None
        rss.append(info.rss if info else 0)
        pss.append(getattr(info, "pss", 0) if info else 0)
    parts = [_rss_parts(p.pid) for p in procs]
    names = {pid: name for name, pid in _stub_names(server_pid).items()}
    detail = " ".join(f"{names.get(p.pid, p.pid)}={q['RssAnon']}" for p, q in zip(procs[1:], parts[1:]))
    stubs = sorted(p.pid for p in procs[1:])
    return MemorySample(round(t, 1), rss[0], sum(rss[1:]), sum(rss), sum(pss), len(stubs), " ".join(map(str, stubs)),
                        server_anon=parts[0]["RssAnon"], server_shmem=parts[0]["RssShmem"],
                        stubs_anon=sum(q["RssAnon"] for q in parts[1:]),
                        stubs_shmem=sum(q["RssShmem"] for q in parts[1:]),
                        total_file=sum(q["RssFile"] for q in parts), shm_bytes=_shm_bytes(server),
                        stub_anon_detail=detail)


def _stub_names(server_pid: int) -> dict[str, int]:
    from tests.reliability.faults import stub_processes   # instance name -> pid, from each stub's argv

    return stub_processes(server_pid)


def _rss_parts(pid: int) -> dict[str, int]:
    """RssAnon / RssFile / RssShmem of one process in bytes (0 when it is gone)."""
    out = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in out:
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _shm_bytes(server) -> int:
    """Allocated bytes of the server's python-backend regions in /dev/shm (its shm-region-prefix-name)."""
    try:
        prefix = next((a.split("shm-region-prefix-name=", 1)[1] for a in server.cmdline()
                       if "shm-region-prefix-name=" in a), None)
    except Exception:  # psutil.Error: the server is gone
        return 0
    if not prefix:
        return 0
    total = 0
    for region in Path("/dev/shm").glob(prefix + "*"):
        try:
            total += region.stat().st_blocks * 512
        except OSError:
            pass
    return total


def _is_stub(proc) -> bool:
    import psutil

    try:
        argv = proc.cmdline()
        return bool(argv) and argv[0].endswith(STUB_BINARY) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class MemorySampler(PeriodicSampler):
    """Samples on its own thread every ``interval_s`` (the first sample at once)."""

    def __init__(self, pid: int, interval_s: float):
        super().__init__(interval_s)
        self.pid = pid
        self.origin = time.monotonic()

    def start(self) -> "MemorySampler":
        self.origin = time.monotonic()
        return super().start()

    def sample(self) -> MemorySample:
        return sample_memory(self.pid, time.monotonic() - self.origin)


def growth(samples: list[MemorySample], baseline_s: float, field: str = "total_rss") -> dict:
    """Mean ``field`` in [baseline_s, baseline_s + w) vs the last w seconds; w = 30 s (less on short runs)."""
    if not samples:
        raise ValueError("no memory samples")
    end_t = samples[-1].t
    window = min(WINDOW_S, (end_t - baseline_s) / 2.0)
    base = [getattr(s, field) for s in samples if baseline_s <= s.t < baseline_s + window]
    end = [getattr(s, field) for s in samples if s.t >= end_t - window]
    if window <= 0 or not base or not end:
        raise ValueError(f"the run ({end_t:.0f}s of samples) is too short for a baseline at {baseline_s:.0f}s: "
                         "lower --baseline-min or run longer")
    b, e = statistics.fmean(base), statistics.fmean(end)
    return {"field": field, "window_s": round(window, 1), "baseline_bytes": round(b), "end_bytes": round(e),
            "growth": round(e / b - 1.0, 4) if b else None}


def stub_growth(samples: list[MemorySample], baseline_s: float, top: int = 6) -> dict[str, float]:
    """The stubs whose heap (RssAnon) grew most, in MiB, from the first sample at ``baseline_s`` to the last."""
    first = next((s for s in samples if s.t >= baseline_s), samples[0]).stub_anon()
    last = samples[-1].stub_anon()
    diff = {k: (last[k] - first[k]) / (1 << 20) for k in last if k in first}
    return dict(sorted(((k, round(v, 1)) for k, v in diff.items()), key=lambda kv: -kv[1])[:top])


# ------------------------------------------------------------------------------------------------ locust


def run_locust(users: int, seconds: float, prefix: Path, grpc_url: str, http_url: str, sizes: str | None) -> dict:
    """One headless locust run; the Aggregated row of its stats CSV (requests, failures, rps, p50/p95)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_GRPC_URL", "TRITON_HTTP_URL")}
    env.update(TRITON_GRPC_URL=grpc_url, TRITON_HTTP_URL=http_url, DRAPE_LOAD_WAIT="0", DRAPE_LOAD_TIMEOUT="120")
    if sizes:
        env["DRAPE_LOAD_SIZES"] = sizes
    cmd = [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{int(round(seconds))}s", "--stop-timeout", "120", "--csv", str(prefix), "--only-summary"]
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 600)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.is_file():
        raise RuntimeError(f"locust wrote no stats (exit {run.returncode}):\n{run.stderr[-3000:]}")
    with open(stats, newline="") as f:
        rows = list(csv.DictReader(f))
    agg = next(r for r in rows if r["Name"] == "Aggregated")
    failures = []
    fail_csv = Path(f"{prefix}_failures.csv")
    if fail_csv.is_file():
        with open(fail_csv, newline="") as f:
            failures = [{"name": r["Name"], "error": r["Error"][:300], "count": int(r["Occurrences"])}
                        for r in csv.DictReader(f)]
    num = lambda v: float(v) if v not in ("", "N/A") else None  # noqa: E731
    return {"users": users, "seconds": seconds, "requests": int(agg["Request Count"]),
            "failures": int(agg["Failure Count"]), "rps": num(agg["Requests/s"]), "p50_ms": num(agg["50%"]),
            "p95_ms": num(agg["95%"]), "max_ms": num(agg["Max Response Time"]), "failure_detail": failures,
            "exit_code": run.returncode}


def find_saturation(cfg: SoakConfig, grpc_url: str, http_url: str, log=print) -> tuple[int, list[dict]]:
    """Step 2, 4, 8... users; saturation: the first step whose throughput rose less than ``rise``."""
    steps, users = [], 2
    while users <= cfg.max_users:
        step = run_locust(users, cfg.step_s, cfg.out / f"step_{users}u", grpc_url, http_url, cfg.sizes)
        steps.append(step)
        log(f"soak: {users} users -> {step['rps']:.2f} req/s, p95 {step['p95_ms']} ms, {step['failures']} failed")
        if len(steps) > 1 and step["rps"] < steps[-2]["rps"] * (1.0 + cfg.rise):
            return users, steps
        users *= 2
    return steps[-1]["users"], steps


# ---------------------------------------------------------------------------------------------- the soak


def soak(cfg: SoakConfig, grpc_url: str, http_url: str, pid: int, log=print) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    steps: list[dict] = []
    users = cfg.users
    if users is None:
        users, steps = find_saturation(cfg, grpc_url, http_url, log)
    seconds = cfg.minutes * 60.0
    log(f"soak: {users} users for {cfg.minutes:g} min against gRPC {grpc_url} / HTTP {http_url}, "
        f"memory of pid {pid} + stubs every {cfg.sample_s:g}s")
    sampler = MemorySampler(pid, cfg.sample_s).start()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(
        run_locust(users, seconds, cfg.out / "locust", grpc_url, http_url, cfg.sizes)), daemon=True)
    runner.start()
    _progress(runner, seconds)
    sampler.stop()
    samples = sampler.samples
    _write_samples(cfg.out / "memory.csv", samples)
    report = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              "users": users, "saturation_steps": steps, "locust": result, "samples": len(samples)}
    problems = []
    if not result:
        problems.append("locust did not report")
    else:
        if result["failures"]:
            problems.append(f"{result['failures']} of {result['requests']} requests failed")
        if result["requests"] < cfg.min_requests:
            problems.append(f"only {result['requests']} requests (need >= {cfg.min_requests})")
    try:
        report["rss"] = growth(samples, cfg.baseline_min * 60.0, "total_rss")
        report["pss"] = growth(samples, cfg.baseline_min * 60.0, "total_pss")
        report["server_rss"] = growth(samples, cfg.baseline_min * 60.0, "server_rss")
        report["breakdown"] = {f: growth(samples, cfg.baseline_min * 60.0, f) for f in BREAKDOWN}
        report["stub_anon_growth_mib"] = stub_growth(samples, cfg.baseline_min * 60.0)
        if report["rss"]["growth"] > cfg.max_growth:
            problems.append(f"RSS grew {report['rss']['growth']:.1%} > {cfg.max_growth:.0%} from minute "
                            f"{cfg.baseline_min:g} to the end")
    except ValueError as exc:
        problems.append(str(exc))
    if samples and samples[0].stub_set != samples[-1].stub_set:
        problems.append(f"stub processes changed during the soak ({samples[0].stubs} -> {samples[-1].stubs})")
    report["peak_rss_bytes"] = max((s.total_rss for s in samples), default=0)
    report["problems"] = problems
    (cfg.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _progress(thread: threading.Thread, seconds: float) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("soak"), BarColumn(), TimeElapsedColumn(), transient=not sys.stderr.isatty()) as bar:
        task = bar.add_task("soak", total=seconds)
        start = time.monotonic()
        while thread.is_alive():
            bar.update(task, completed=min(seconds, time.monotonic() - start))
            thread.join(1.0)


def _write_samples(path: Path, samples: list[MemorySample]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(samples[0]) if samples else ["t"]))
        w.writeheader()
        w.writerows(asdict(s) for s in samples)


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=140)
    if report["saturation_steps"]:
        t = Table(title="saturation search")
        for c in ("users", "req/s", "p50 ms", "p95 ms", "failed"):
            t.add_column(c)
        for s in report["saturation_steps"]:
            t.add_row(str(s["users"]), f"{s['rps']:.2f}", str(s["p50_ms"]), str(s["p95_ms"]), str(s["failures"]))
        con.print(t)
    loc = report["locust"]
    if loc:
        con.print(f"soak at {report['users']} users: {loc['requests']} requests, {loc['failures']} failed, "
                  f"{loc['rps']:.2f} req/s, p50 {loc['p50_ms']} ms, p95 {loc['p95_ms']} ms, max {loc['max_ms']} ms")
        for f in loc["failure_detail"][:10]:
            con.print(f"  [red]x{f['count']}[/] {f['name']}: {f['error']}")
    mib = 1 << 20
    for key in ("rss", "pss", "server_rss"):
        if key in report:
            g = report[key]
            con.print(f"{key}: {g['baseline_bytes'] / mib:.0f} MiB at minute {report['config']['baseline_min']} -> "
                      f"{g['end_bytes'] / mib:.0f} MiB at the end ({g['growth']:+.1%})")
    for key, g in report.get("breakdown", {}).items():
        con.print(f"  {key:<13} {g['baseline_bytes'] / mib:7.0f} -> {g['end_bytes'] / mib:7.0f} MiB "
                  f"({(g['end_bytes'] - g['baseline_bytes']) / mib:+.0f} MiB)")
    if report.get("stub_anon_growth_mib"):
        con.print("  stub heap growth (MiB): " + ", ".join(f"{k} {v:+.0f}" for k, v in report["stub_anon_growth_mib"].items()))
    con.print(f"peak RSS {report['peak_rss_bytes'] / mib:.0f} MiB over {report['samples']} samples")
    for p in report["problems"]:
        con.print(f"[red]FAIL[/] {p}")
    if not report["problems"]:
        con.print("[green]soak: OK[/]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="soak length (default %(default)s)")
    p.add_argument("--users", type=int, default=None, help="locust users (default: find saturation first)")
    p.add_argument("--step-s", type=float, default=45.0, help="seconds per saturation step (default %(default)s)")
    p.add_argument("--max-users", type=int, default=16, help="saturation search limit (default %(default)s)")
    p.add_argument("--rise", type=float, default=0.10, help="a step must add this much throughput (default %(default)s)")
    p.add_argument("--sample-s", type=float, default=5.0, help="memory sample interval (default %(default)s)")
    p.add_argument("--baseline-min", type=float, default=2.0, help="minute the growth is measured from (default %(default)s)")
    p.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth (default %(default)s)")
    p.add_argument("--min-requests", type=int, default=10)
    p.add_argument("--sizes", default=None, help="DRAPE_LOAD_SIZES for the locust users (default: the locustfile's mix)")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="model repository to serve (default %(default)s)")
    p.add_argument("--grpc-url", default=None, help="use a running server (with --http-url and --pid)")
    p.add_argument("--http-url", default=None)
    p.add_argument("--pid", type=int, default=None, help="tritonserver pid of the running server (for its memory)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = SoakConfig(a.minutes, a.users, a.step_s, a.max_users, a.rise, a.sample_s, a.baseline_min, a.max_growth,
                     a.min_requests, a.sizes, a.out)
    if a.grpc_url or a.http_url or a.pid:
        if not (a.grpc_url and a.http_url and a.pid):
            print("soak: a running server needs --grpc-url, --http-url and --pid", file=sys.stderr)
            return 2
        report = soak(cfg, a.grpc_url, a.http_url, a.pid)
    else:
        from drape_serving.server import start_server

        cfg.out.mkdir(parents=True, exist_ok=True)
        with start_server(a.repo, log_file=cfg.out / "tritonserver.log", ready_timeout=240) as server:
            report = soak(cfg, server.grpc_url, server.http_url, server.process.pid)
    _print(report)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
