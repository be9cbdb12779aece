"""Deployment config against the real server: the flags the Kubernetes Deployment passes are accepted by the
real tritonserver (Triton 2.51, the NGC 24.10 release the images pin) and do what they claim, /dev/shm is sized
for the python backend as measured, and the standalone Prometheus config scrapes the ports the manifests use.
"""
from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from drape_serving import server as srv

ROOT = Path(__file__).resolve().parent.parent
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert m, quantity
    return int(m.group(1)) * _UNITS.get(m.group(2), 1)


def _triton(overlay: str) -> dict:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True,
                         text=True, check=True).stdout
    return next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment" and d["metadata"]["name"] == "drape-triton")


def _flag(args: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]


def _status(url: str, headers: dict[str, str], method: str = "GET") -> int:
    req = urllib.request.Request(url, data=b"{}" if method == "POST" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.server
def test_triton_accepts_the_deployment_flags_and_restricts_admin_apis(cpu_repo, tmp_path):
    """Start the real server with the cpu overlay's args; ports and repository are the test's own.

    drape-serve itself restricts the admin APIs with the same flags (key from $DRAPE_ADMIN_KEY): the Deployment's
    two restricted-API flags, with the Secret's key substituted, must be exactly the ones the server ran with.
    """
    container = _triton("cpu")["spec"]["template"]["spec"]["containers"][0]
    key = secrets.token_urlsafe(24)
    own = ("--model-repository", "--http-port", "--grpc-port", "--metrics-port")
    restricted = ("--http-restricted-api", "--grpc-restricted-protocol")
    args = [a.replace("$(DRAPE_ADMIN_KEY)", key) for a in container["args"] if not a.startswith(own)]
    assert not [a for a in args if "$(" in a], "every $(VAR) the server sees is expanded by the kubelet"
    k8s_restricted = [a for a in args if a.startswith(restricted)]
    assert len(k8s_restricted) == 2

    with srv.start_server(cpu_repo, log_file=tmp_path / "triton.log", ready_timeout=240, admin_key=key,
                          extra_args=[a for a in args if not a.startswith(restricted)]) as h:
        assert [a for a in h.command if a.startswith(restricted)] == k8s_restricted
        base = f"http://{h.http_url}"
        header = {srv.ADMIN_HEADER: key}
        # Admin APIs need the key; inference, metadata and health do not.
        assert _status(f"{base}/v2/repository/index", {}, "POST") == 403
        assert _status(f"{base}/v2/repository/index", header, "POST") == 200
        assert _status(f"{base}/v2/models/stats", {}) == 403
        assert _status(f"{base}/v2/models/stats", header) == 200
        assert _status(f"{base}/v2/models/tryon", {}) == 200
        assert _status(f"{base}/v2/health/ready", {}) == 200

        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        g = grpcclient.InferenceServerClient(h.grpc_url)
        with pytest.raises(InferenceServerException, match="restricted"):
            g.get_model_repository_index()
        assert g.get_model_repository_index(headers=h.admin_headers("grpc")) is not None

        from drape_monitoring.prober import make_client

        samples = ROOT / "build" / "samples"
        with make_client(h.grpc_url) as client:
            assert client.tryon(samples / "person.jpg", samples / "garment.jpg").ndim == 3
        metrics = urllib.request.urlopen(h.metrics_url, timeout=10).read().decode()
        assert 'nv_inference_request_summary_us{model="tryon",version=' in metrics and 'quantile="0.95"' in metrics

        # HTTP and gRPC on loopback only (the gateway sidecar is the way in), metrics on every address (Prometheus)
        for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=0.0.0.0"):
            assert flag in h.command, flag
        outside = _non_loopback_ipv4()
        if outside:
            for port in (h.http_port, h.grpc_port):
                with pytest.raises(OSError):
                    socket.create_connection((outside, port), timeout=2).close()
            socket.create_connection((outside, h.metrics_port), timeout=2).close()


def _non_loopback_ipv4() -> str | None:
    """This machine's outbound IPv4 address (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.255", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _python_instances(repo: Path) -> int:
    """Python-backend model instances Triton starts for a repository (each gets one shm region)."""
    total = 0
    for config in repo.glob("*/config.pbtxt"):
        text = config.read_text()
        if re.search(r'^backend:\s*"python"', text, re.M):
            counts = [int(c) for c in re.findall(r"count:\s*(\d+)", text)]
            total += sum(counts) or 1
    return total


@pytest.mark.server
def test_dev_shm_is_sized_for_the_python_backend(real_server, cpu_repo):
    default = int(_flag(real_server.command, "--backend-config")[1].split("=")[-1])
    assert default == srv.python_shm_bytes()
    for overlay, repo_instances in (("cpu", _python_instances(cpu_repo)),
                                    ("gpu", _python_instances(ROOT / "model_repository" / "configs"))):
        spec = _triton(overlay)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        backend = dict(a.split(",", 1)[1].split("=") for a in _flag(c["args"], "--backend-config"))
        assert int(backend["shm-default-byte-size"]) == srv.python_shm_bytes()
        assert int(backend["shm-growth-byte-size"]) == 64 * 2**20
        limit = _bytes(next(v for v in spec["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"])
        # One default region per python-model instance, and room for each to grow twice.
        needed = repo_instances * (int(backend["shm-default-byte-size"]) + 2 * int(backend["shm-growth-byte-size"]))
        assert needed <= limit, f"{overlay}: /dev/shm {limit} < {needed} for {repo_instances} python instances"
        # Memory-backed emptyDir counts against the container's memory limit.
        assert limit < _bytes(c["resources"]["limits"]["memory"]) / 2, overlay

    # Measured: the regions the running CPU server created (after the requests other tests sent).
    prefix = _flag(real_server.command, "--backend-config")[0].split("=", 1)[1]
    regions = [p for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix)]
    assert len(regions) == _python_instances(cpu_repo)
    used = sum(p.stat().st_size for p in regions)
    cpu_limit = _bytes(next(v for v in _triton("cpu")["spec"]["template"]["spec"]["volumes"]
                            if v["name"] == "dshm")["emptyDir"]["sizeLimit"])
    assert used * 1.5 <= cpu_limit, f"{used} bytes of python-backend shm in use, /dev/shm is {cpu_limit}"


def test_standalone_prometheus_scrapes_the_ports_the_manifests_use():
    from drape_monitoring.prober import DEFAULT_PORT

    cfg = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {job["job_name"]: t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"drape-triton": f"localhost:{srv.DEFAULT_METRICS_PORT}", "drape-prober": f"localhost:{DEFAULT_PORT}"}
    c = _triton("gpu")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == srv.DEFAULT_METRICS_PORT
    assert f"--metrics-port={srv.DEFAULT_METRICS_PORT}" in c["args"]
    base = ROOT / "k8s" / "base" / "prober-deployment.yaml"
    prober = yaml.safe_load(base.read_text())["spec"]["template"]["spec"]["containers"][0]
    assert prober["ports"][0]["containerPort"] == DEFAULT_PORT and f"--port={DEFAULT_PORT}" in prober["args"]
