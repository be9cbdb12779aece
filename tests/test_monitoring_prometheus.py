"""A real Prometheus scraping a real Triton and the prober; and the Grafana dashboard checked against both.

The module starts the Debian `prometheus` binary on a free loopback port with a 1 s scrape/evaluation interval,
the repository's rule file, and two jobs named like the Kubernetes Services (drape-triton, drape-prober). It
then sends requests and watches the raw counters and the recording rules move through Prometheus' HTTP API.
Without the binary it skips and says so (.ci/run installs it). Bounded: everything here takes well under 90 s
once the session's Triton is up.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from drape_monitoring import prober, rules
from drape_monitoring.promql import grafana_to_promql, metric_names

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "drape-dashboard.json"
RULES = ROOT / "monitoring" / "rules" / "drape.rules.yml"
ADAPTER = ROOT / "k8s" / "prometheus-adapter" / "values.yaml"
SAMPLES = ROOT / "build" / "samples"
TRITON_GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                      "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption"}


def _panels_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def _exported_names(url: str) -> set[str]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {line.replace("{", " ").split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


# ----------------------------------------------------------------------------------------------- dashboard, static


def test_dashboard_covers_the_required_views():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 36
    used = set().union(*(metric_names(e) for _, e in _panels_targets()))
    for needed in ("drape:request_rate:rate1m", "drape:request_duration_us:p95", "drape:queue_us_per_request:rate1m",
                   "drape:batch_size:rate1m", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
                   "drape_prober_quality_delta_e", "drape:prober_success_ratio:rate5m"):
        assert needed in used, f"dashboard shows no {needed}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


@pytest.mark.server
def test_dashboard_queries_use_metrics_that_exist(real_server):
    """Every metric a panel reads: seen on the real Triton's /metrics, exported by the prober, a documented GPU
    metric, a recording rule, or Prometheus' own `up`."""
    triton = _exported_names(real_server.metrics_url)
    records = {r["record"] for g in rules.load_groups(RULES) for r in g["rules"] if "record" in r}
    known = triton | set(prober.METRIC_NAMES) | TRITON_GPU_METRICS | records | {"up"}
    for title, expr in _panels_targets():
        missing = metric_names(expr) - known
        assert not missing, f"panel {title!r} reads unknown series {sorted(missing)}: {expr}"


def test_dashboard_queries_parse(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
                                            for i, (_, expr) in enumerate(_panels_targets())]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------------------------------- live Prometheus stack


@dataclass
class Stack:
    prometheus_url: str
    triton: object
    prober_port: int

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, expr: str) -> list[float]:
        return [float(s["value"][1]) for s in self.query(expr)]

    def wait_for(self, expr: str, ok, timeout: float = 30.0) -> list[float]:
        """Poll until ``ok(values)`` holds; fail with the last values seen."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            values = self.values(expr)
            if values and ok(values):
                return values
            time.sleep(0.5)
        pytest.fail(f"{expr}: condition not met within {timeout:.0f}s, last values {values}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(real_server, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus not found: install the Debian package `prometheus` (.ci/run does)", file=sys.stderr)
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    from drape_serving.server import free_ports

    tmp = tmp_path_factory.mktemp("prometheus")
    golden = tmp / "golden"
    with prober.make_client(real_server.grpc_url) as client:
        person, garment = (SAMPLES / "person.jpg").read_bytes(), (SAMPLES / "garment.jpg").read_bytes()
        prober.record_golden(client, {"tryon": {"person_image": person, "garment_image": garment},
                                      "recolor": {"on_model_image": person, "still_image": garment}}, golden)

    prober_port, prom_port = free_ports(2)
    prober_log = open(tmp / "prober.log", "w")
    prober_proc = subprocess.Popen(
        [sys.executable, "-m", "drape_monitoring.prober", "run", "--url", real_server.grpc_url, "--golden", str(golden),
         "--interval", "2", "--address", "127.0.0.1", "--port", str(prober_port)],
        stdout=prober_log, stderr=subprocess.STDOUT, cwd=ROOT)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "drape-triton", "static_configs": [{"targets": [f"127.0.0.1:{real_server.metrics_port}"]}]},
            {"job_name": "drape-prober", "static_configs": [{"targets": [f"127.0.0.1:{prober_port}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_log = open(tmp / "prometheus.log", "w")
    prom = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=prom_log, stderr=subprocess.STDOUT, cwd=tmp, preexec_fn=os.setpgrp)
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert prom.poll() is None, (tmp / "prometheus.log").read_text()
            assert prober_proc.poll() is None, (tmp / "prober.log").read_text()
            try:
                if urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 30 s:\n" + (tmp / "prometheus.log").read_text()
            time.sleep(0.3)
        yield Stack(url, real_server, prober_port)
    finally:
        _stop(prober_proc)
        _stop(prom)
        prober_log.close()
        prom_log.close()


@pytest.mark.server
@pytest.mark.timeout(150)
def test_prometheus_sees_series_move_after_requests(stack):
    started = time.monotonic()
    stack.wait_for('up{job="drape-triton"}', lambda v: v == [1.0])
    stack.wait_for('up{job="drape-prober"}', lambda v: v == [1.0])
    # Ten seconds of history first, so the "before" rate is the prober's steady rate, not a two-sample estimate.
    stack.wait_for('count_over_time(up{job="drape-triton"}[1m])', lambda v: v[0] >= 10)
    success = 'sum(nv_inference_request_success{job="drape-triton",model="recolor"})'
    before = stack.wait_for(success, lambda v: True)[0]
    rate_before = stack.wait_for('drape:request_rate:rate1m{model="recolor"}', lambda v: True)[0]

    from drape_monitoring.prober import make_client

    n = 12
    with make_client(stack.triton.grpc_url) as client:
        for _ in range(n):
            client.recolor(SAMPLES / "person.jpg", SAMPLES / "garment.jpg")

    # The raw counter went up by at least our requests (the prober adds its own), and the recording rule with it.
    stack.wait_for(success, lambda v: v[0] >= before + n)
    stack.wait_for('drape:request_rate:rate1m{model="recolor"}', lambda v: v[0] > rate_before + 0.1)
    stack.wait_for('drape:request_success_ratio:rate5m{model="recolor"}', lambda v: v[0] > 0.9)
    stack.wait_for('drape:request_duration_us:p95{model="recolor"}', lambda v: v[0] > 0)
    stack.wait_for('drape:queue_us_per_request:rate1m{model="recolor_net"}', lambda v: v[0] >= 0)
    stack.wait_for('drape:batch_size:rate1m{model="recolor_net"}', lambda v: 1 <= v[0] <= 8)
    stack.wait_for('drape_pod:queue_us_per_request:rate1m{job="drape-triton"}', lambda v: v[0] >= 0)

    # The prober: probes keep succeeding, its series reach Prometheus and its recording rule reads 1.
    ok = 'sum(drape_prober_probes_total{job="drape-prober",result="ok"})'
    first = stack.wait_for(ok, lambda v: v[0] >= 2)[0]
    stack.wait_for(ok, lambda v: v[0] >= first + 2)
    stack.wait_for('drape:prober_success_ratio:rate5m', lambda v: len(v) == 2 and all(x == 1.0 for x in v))
    stack.wait_for("drape_prober_ready", lambda v: v == [1.0])
    stack.wait_for('drape_prober_quality_delta_e{output="tryon_image"}', lambda v: v[0] <= 2.0)
    assert stack.query('ALERTS{alertname=~"DrapeWrongResults|DrapeProberFailing|DrapeModelNotReady|DrapeTritonDown"}') == []
    assert time.monotonic() - started < 90


@pytest.mark.server
@pytest.mark.timeout(120)
def test_hpa_metric_query_of_prometheus_adapter_evaluates(stack):
    """The adapter's metricsQuery, with the label matchers it would fill in for our pod, returns the per-replica
    recording rule's value: what the HPA will see."""
    rule = yaml.safe_load(ADAPTER.read_text())["rules"]["custom"][0]
    series = rule["seriesQuery"].split("{", 1)[0]
    query = (rule["metricsQuery"].replace("<<.Series>>", series)
             .replace("<<.LabelMatchers>>", 'job="drape-triton"').replace("<<.GroupBy>>", "instance"))
    recorded = stack.wait_for(f'{series}{{job="drape-triton"}}', lambda v: True)
    adapter = stack.wait_for(query, lambda v: True)
    assert len(adapter) == 1 and adapter[0] >= 0
    assert adapter[0] == pytest.approx(recorded[0], rel=0.5, abs=1e3)


@pytest.mark.server
@pytest.mark.timeout(120)
def test_every_dashboard_query_evaluates_on_live_prometheus(stack):
    """Each panel query runs without error; all but the GPU panels return data from a CPU server."""
    stack.wait_for('drape:prober_success_ratio:rate5m', lambda v: len(v) == 2)
    stack.wait_for('drape:request_rate:rate1m', lambda v: len(v) > 0)
    empty = []
    for title, expr in _panels_targets():
        promql = grafana_to_promql(expr, interval="30s")
        result = stack.query(promql)
        if not result and not (metric_names(expr) & TRITON_GPU_METRICS):
            empty.append(f"{title}: {promql}")
    assert not empty, "panels with no data on a live CPU stack:\n" + "\n".join(empty)
