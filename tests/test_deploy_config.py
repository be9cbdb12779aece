"""Deployment config that exists so far: the kustomize base renders, and Prometheus scrapes Triton's metrics port."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed")
def test_kustomize_base_renders_triton_with_named_ports_and_health_probes():
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "base")], capture_output=True, text=True,
                         check=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    pod = docs["Deployment"]["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "--model-control-mode=none" in c["args"] and "--strict-readiness=true" in c["args"]
    sel = docs["Service"]["spec"]["selector"]
    assert sel and all(pod["metadata"]["labels"][k] == v for k, v in sel.items())


def test_prometheus_scrapes_triton_metrics_port():
    cfg = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "localhost:8002" in targets
