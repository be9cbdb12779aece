"""Recording and alert rules: promtool unit tests, one source for standalone and kube-prometheus, real metric names.

promtool comes from the Debian package `prometheus` (.ci/run installs it); without it these tests skip and say so.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from drape_monitoring import prober, rules
from drape_monitoring.promql import metric_names

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
RULES = MON / "rules" / "drape.rules.yml"
RULE_TESTS = sorted((MON / "rules" / "tests").glob("*.test.yml"))

# Triton's GPU metrics exist only where Triton sees a GPU (docs/user_guide/metrics.md, "GPU Metrics").
TRITON_GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                      "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption"}
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "ALERTS"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        print("promtool not found: install the Debian package `prometheus` (.ci/run does)", file=sys.stderr)
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return path


def _rules() -> list[dict]:
    return [r for g in rules.load_groups(RULES) for r in g["rules"]]


def test_rule_files_pass_promtool_check():
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_rule_unit_tests(test_file):
    out = subprocess.run([_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                         cwd=test_file.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_rule_is_unit_tested():
    """Each recording rule is evaluated and each alert asserted firing by some promtool test."""
    tested_exprs, tested_alerts = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested_exprs |= {t["expr"] for t in case.get("promql_expr_test", [])}
            tested_alerts |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    records = {r["record"] for r in _rules() if "record" in r}
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    used = set().union(*(metric_names(e) for e in tested_exprs))
    assert records <= used, f"recording rules without a promtool test: {sorted(records - used)}"
    assert alerts <= tested_alerts, f"alerts never tested firing: {sorted(alerts - tested_alerts)}"
    required = {"DrapeHighErrorRatio", "DrapeQueueTimeHigh", "DrapeModelNotReady", "DrapeProberFailing",
                "DrapeGpuMemoryNearLimit", "DrapeWrongResults"}
    assert required <= alerts


def test_alerts_have_severity_summary_and_a_runbook_section():
    readme = (MON / "README.md").read_text().lower()
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower() and f"### {rule['alert'].lower()}" in readme, rule["alert"]


def test_prometheusrule_is_generated_from_the_rule_file():
    """One source of truth: the kube-prometheus PrometheusRule carries exactly the standalone file's groups."""
    manifest = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == rules.load_groups(RULES)
    check = subprocess.run([sys.executable, "-m", "drape_monitoring.rules", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_generator_detects_drift(tmp_path):
    out = tmp_path / "pr.yaml"
    assert rules.main(["--out", str(out)]) == 0
    assert rules.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("0.05", "0.5"))
    assert rules.main(["--out", str(out), "--check"]) == 1


def test_standalone_prometheus_config_loads_the_rules():
    out = subprocess.run([_promtool(), "check", "config", str(MON / "prometheus.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    assert [(MON / f).resolve() for f in cfg["rule_files"]] == [RULES.resolve()]


@pytest.mark.server
def test_rules_only_read_metrics_that_exist(real_server):
    """Every series a rule reads is exported by the real Triton, the prober, a recording rule, or is a GPU metric."""
    triton = _exported_names(real_server.metrics_url)
    assert {"nv_inference_request_success", "nv_inference_queue_duration_us", "nv_inference_request_summary_us"} <= triton
    known = triton | set(prober.METRIC_NAMES) | TRITON_GPU_METRICS | PROMETHEUS_BUILTIN
    known |= {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        missing = metric_names(rule["expr"]) - known
        assert not missing, f"{rule.get('record') or rule.get('alert')} reads unknown series {sorted(missing)}"


def _exported_names(url: str) -> set[str]:
    """Sample names on a /metrics page (summary quantiles, _sum and _count included)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {re.split(r"[{ ]", line, 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
