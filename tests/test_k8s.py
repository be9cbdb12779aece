"""Kubernetes manifests: every kustomization renders, validates offline against the Kubernetes schemas (strict), and
keeps the policy the deployment relies on (Pod Security "restricted", probes, GPU limits, secrets, versions).

Custom resources (ServiceMonitor, PrometheusRule) have no schema in kubernetes-validate: they get explicit
structural checks against the objects they point at. The serving Dockerfile cannot be built here (no Docker
engine): it is linted, and the file set it copies is built into a wheel to prove the image gets the torch-free
packages and not the training one.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ["gpu", "cpu", "gpu-s3"]
JOBS = ["train", "build-engines", "assemble-cpu", "record-golden"]
KUSTOMIZATIONS = [f"overlays/{o}" for o in OVERLAYS] + [f"jobs/{j}" for j in JOBS]
K8S_VERSIONS = ["1.30.0", "1.33.0"]
DOCKERFILE = K8S / "Dockerfile"
NGC_RELEASE = "24.10"  # Triton 2.51.0 / TensorRT 10.5: what the pytriton tritonserver used by the tests runs too
ADMIN_APIS = "model-repository,shared-memory,statistics,trace,logging"
ALLOWED_VOLUMES = {"persistentVolumeClaim", "emptyDir", "configMap", "secret", "projected", "downwardAPI",
                   "ephemeral", "csi"}
# Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards), the rules the explicit
# asserts in test_pod_security_restricted do not spell out; checked by pss_violations() on every pod template.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECRET_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.I)
SECRET_TEXT = [re.compile(p) for p in (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"\bA(KIA|SIA)[0-9A-Z]{16}\b", r"\bgh[pousr]_[A-Za-z0-9]{36}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}", r"drape-admin-key=(?!\$\(DRAPE_ADMIN_KEY\))")]


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        print("kubectl not found: the manifests cannot be rendered", file=sys.stderr)
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    return path


_RENDERED: dict[str, list[dict]] = {}


def render(path: str) -> list[dict]:
    """`kubectl kustomize k8s/<path>` as a list of objects (cached: rendering is deterministic)."""
    if path not in _RENDERED:
        out = subprocess.run([_kubectl(), "kustomize", str(K8S / path)], capture_output=True, text=True)
        assert out.returncode == 0, f"kustomize {path} failed:\n{out.stderr}"
        _RENDERED[path] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return _RENDERED[path]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(workload name, pod template metadata, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["metadata"], d["spec"]))
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            t = d["spec"]["template"]
            out.append((f"{d['kind']}/{d['metadata']['name']}", t["metadata"], t["spec"]))
        elif d["kind"] == "CronJob":
            t = d["spec"]["jobTemplate"]["spec"]["template"]
            out.append((f"CronJob/{d['metadata']['name']}", t["metadata"], t["spec"]))
    return out


def pss_violations(name: str, meta: dict, spec: dict) -> list[str]:
    """Baseline + restricted Pod Security Standard rules beyond the explicit asserts of test_pod_security_restricted:
    hostProcess, AppArmor (fields and annotations), SELinux options, /proc mount, seccomp and runAsNonRoot on each
    container (a container can override the pod's), sysctls outside the safe set."""
    found = []
    psc = spec.get("securityContext", {})
    containers = spec.get("initContainers", []) + spec.get("containers", []) + spec.get("ephemeralContainers", [])
    for where, sc in [(name, psc)] + [(f"{name}/{c['name']}", c.get("securityContext", {})) for c in containers]:
        if sc.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{where}: windowsOptions.hostProcess")
        if sc.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile {sc['appArmorProfile']}")
        se = sc.get("seLinuxOptions", {})
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            found.append(f"{where}: seLinuxOptions {se}")
        if sc.get("seccompProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile {sc['seccompProfile']}")
        if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
            found.append(f"{where}: may run as root")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {sc['procMount']}")
    for key, value in meta.get("annotations", {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            found.append(f"{name}: annotation {key}={value}")
    found += [f"{name}: sysctl {s['name']}" for s in psc.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS]
    return found


def _pod_templates(node) -> int:
    """How many pod specs (objects with `containers`) a manifest holds, whatever its kind."""
    if isinstance(node, dict):
        return int("containers" in node) + sum(_pod_templates(v) for v in node.values())
    return sum(_pod_templates(v) for v in node) if isinstance(node, list) else 0


def triton(path: str) -> tuple[dict, dict]:
    dep = one(render(path), "Deployment", "drape-triton")
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def env_value(container: dict, name: str) -> dict:
    return next(e for e in container["env"] if e["name"] == name)


# ------------------------------------------------------------------------------------------ render + schemas


def test_no_kustomization_is_left_out():
    found = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml") if p.parent.name != "base")
    assert found == sorted(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_renders_and_validates_strictly(path, version):
    import kubernetes_validate

    docs = render(path)
    assert docs
    crds = []
    for doc in docs:
        assert doc["metadata"].get("namespace", "drape") == "drape" or doc["kind"] == "Namespace"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            crds.append(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {exc}")
    assert set(crds) <= {"ServiceMonitor", "PrometheusRule"}, crds


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_pod_security_restricted(path):
    """The Pod Security Standard "restricted" profile, plus read-only root fs, no token, resources."""
    docs = render(path)
    specs = pod_specs(docs)
    assert specs and len(specs) == sum(_pod_templates(d) for d in docs), "a pod template of an unchecked kind"
    for name, meta, spec in specs:
        assert not pss_violations(name, meta, spec), pss_violations(name, meta, spec)
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 1) != 0, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert spec.get("automountServiceAccountToken") is False, name
        for vol in spec.get("volumes", []):
            kinds = set(vol) - {"name"}
            assert kinds <= ALLOWED_VOLUMES, f"{name}: volume {vol['name']} uses {kinds} (hostPath is not allowed)"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged") in (None, False), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsUser", 1) != 0, where
            assert not any(p.get("hostPort") for p in c.get("ports", [])), where
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}), where
            image = c["image"]
            assert "/" in image and ":" in image.rsplit("/", 1)[1] and not image.endswith(":latest"), where


def test_pss_check_rejects_each_rule_it_adds():
    """pss_violations() can fail: one spec breaking every rule it covers, one that breaks none."""
    good = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                                "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost"},
                                                             "seLinuxOptions": {"type": "container_t"}}}]}
    assert pss_violations("Pod/good", {}, good) == []
    bad = {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                               "windowsOptions": {"hostProcess": True}},
           "containers": [{"name": "c", "securityContext": {
               "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"},
               "seLinuxOptions": {"type": "spc_t"}, "procMount": "Unmasked", "runAsNonRoot": False}}]}
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}
    found = " | ".join(pss_violations("Pod/bad", meta, bad))
    for rule in ("hostProcess", "appArmorProfile", "seLinuxOptions", "seccompProfile", "run as root", "procMount",
                 "annotation", "sysctl kernel.msgmax"):
        assert rule in found, rule


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_no_secret_material_in_manifests(path):
    """Secrets only by reference: no Secret objects, every secret-looking env var from a secretKeyRef, no key
    material (private keys, cloud/API tokens, a literal admin key) anywhere in the rendered text or ConfigMaps."""
    docs = render(path)
    assert not [d for d in docs if d["kind"] == "Secret"], f"{path} ships a Secret"
    for name, _, spec in pod_specs(docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if SECRET_ENV.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), f"{name}/{c['name']}: {e}"
    for d in docs:
        text = yaml.safe_dump(d)
        assert not [rx.pattern for rx in SECRET_TEXT if rx.search(text)], f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            assert not [k for k in d.get("data", {}) if SECRET_ENV.search(k)], d["metadata"]["name"]


def test_namespace_enforces_restricted_pod_security():
    ns = one(render("overlays/gpu"), "Namespace", "drape")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --------------------------------------------------------------------------------------------- Triton workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_serving_flags_probes_and_ports(overlay):
    dep, c = triton(f"overlays/{overlay}")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    # tritonserver after emptying /dev/shm (regions a killed server left in the volume), exec'd to stay PID 1
    assert c["command"] == ["/bin/sh", "-c", 'rm -f /dev/shm/* && exec tritonserver "$@"', "tritonserver"]
    args = c["args"]
    for flag in ("--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true",
                 "--metrics-config=summary_latencies=true", "--model-repository=$(MODEL_REPOSITORY)"):
        assert flag in args, flag
    assert f"--http-restricted-api={ADMIN_APIS}:drape-admin-key=$(DRAPE_ADMIN_KEY)" in args
    assert f"--grpc-restricted-protocol={ADMIN_APIS}:drape-admin-key=$(DRAPE_ADMIN_KEY)" in args
    # HTTP/gRPC on loopback only (the gateway sidecar is the way in); metrics reachable for Prometheus
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=0.0.0.0",
                 "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert flag in args, flag
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8002}
    # the kubelet's httpGet dials the pod IP, where Triton does not listen: an exec probe
    assert c["startupProbe"]["exec"]["command"] == ["python3", "-m", "drape_serving.health", "ready"]
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    assert c["startupProbe"]["timeoutSeconds"] >= 3
    # /v2/health/{ready,live} plus the python-backend stubs (Triton does not notice a dead stub; see drape_serving.health)
    assert c["readinessProbe"]["exec"]["command"] == ["python3", "-m", "drape_serving.health", "ready"]
    assert c["livenessProbe"]["exec"]["command"] == ["python3", "-m", "drape_serving.health", "live"]
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} >= {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for t in spread for k, v in t["labelSelector"]["matchLabels"].items())
    assert c["image"].endswith(f"-triton{NGC_RELEASE}")


def _nginx_listen_and_upstreams(config: str) -> tuple[dict[str, int], dict[str, str]]:
    """{"http"|"grpc": listen port} and {"triton_http"|"triton_grpc": "host:port"} of a gateway config."""
    listens = [(int(port), bool(h2)) for port, h2 in re.findall(r"^\s*listen (\d+)( http2)?;", config, re.M)]
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server (\S+)", config))
    return {("grpc" if h2 else "http"): port for port, h2 in listens}, upstreams


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_sidecar_is_the_only_way_in(overlay):
    """The request-size gateway (nginx) owns the pod's http/grpc ports, proxies to Triton's loopback ports, runs the
    generated config from a hashed ConfigMap (a config change rolls the pods) and keeps the restricted profile."""
    from drape_serving import gateway

    docs = render(f"overlays/{overlay}")
    dep, triton_c = triton(f"overlays/{overlay}")
    spec = dep["spec"]["template"]["spec"]
    (gw,) = [c for c in spec["containers"] if c["name"] == "gateway"]
    assert [c["name"] for c in spec["containers"]] == ["triton", "gateway"]
    image, tag = gw["image"].rsplit(":", 1)
    assert image == "nginxinc/nginx-unprivileged" and re.fullmatch(r"\d+\.\d+\.\d+-alpine", tag), gw["image"]
    assert gw["securityContext"]["runAsUser"] == 101 and gw["securityContext"]["readOnlyRootFilesystem"] is True
    # nginx -p <emptyDir>/ -c <ConfigMap mount>/nginx.conf -e stderr, in the foreground (daemon off in the config)
    assert gw["command"] == ["nginx"]
    args = dict(zip(gw["args"][::2], gw["args"][1::2]))
    assert set(args) == {"-p", "-c", "-e"} and args["-e"] == "stderr"
    mounts = {m["mountPath"]: m["name"] for m in gw["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[args["-p"].rstrip("/")]]
    conf_dir, conf_key = args["-c"].rsplit("/", 1)
    cm_name = volumes[mounts[conf_dir]]["configMap"]["name"]
    assert re.fullmatch(r"drape-gateway-[a-z0-9]{10}", cm_name), cm_name
    config = one(docs, "ConfigMap", cm_name)["data"][conf_key]
    assert config == gateway.K8S_CONFIG.read_text() == gateway.render_k8s()
    assert "daemon off;" in config
    # ports: the container's http/grpc are the config's listen ports, the upstreams Triton's loopback ports
    listen, upstreams = _nginx_listen_and_upstreams(config)
    assert {p["name"]: p["containerPort"] for p in gw["ports"]} == listen == {"http": 8080, "grpc": 8081}
    targs = triton_c["args"]
    assert upstreams == {"triton_http": f"127.0.0.1:{next(a.split('=')[1] for a in targs if a.startswith('--http-port='))}",
                         "triton_grpc": f"127.0.0.1:{next(a.split('=')[1] for a in targs if a.startswith('--grpc-port='))}"}
    # the Service keeps 8000/8001 for clients, now the gateway's ports, and 8002 metrics on Triton
    svc = one(docs, "Service", "drape-triton")
    by_name = {p["name"]: p for p in svc["spec"]["ports"]}
    assert {n: p["port"] for n, p in by_name.items()} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    owner = {p["name"]: c["name"] for c in spec["containers"] for p in c.get("ports", [])}
    assert {n: owner[p["targetPort"]] for n, p in by_name.items()} == {"http": "gateway", "grpc": "gateway",
                                                                        "metrics": "triton"}
    # probes: ready through the gateway to Triton, alive while nginx accepts; drained like Triton on stop
    assert gw["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert gw["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert gw["lifecycle"]["preStop"] == triton_c["lifecycle"]["preStop"]
    shutdown = int(re.search(r"worker_shutdown_timeout (\d+)s;", config).group(1))
    assert int(gw["lifecycle"]["preStop"]["exec"]["command"][1]) + shutdown < spec["terminationGracePeriodSeconds"]
    # the NetworkPolicy's inference ports are the gateway's, and nothing opens Triton's own HTTP/gRPC ports
    pol = one(docs, "NetworkPolicy", "drape-triton-inference")
    assert {p["port"] for r in pol["spec"]["ingress"] for p in r["ports"]} == {"http", "grpc"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admin_key_comes_from_a_secret_and_env_references_resolve(overlay):
    _, c = triton(f"overlays/{overlay}")
    key = env_value(c, "DRAPE_ADMIN_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "drape-admin", "key": "admin-key"}
    # Kubernetes expands $(VAR) only for variables defined earlier in `env`.
    defined: list[str] = []
    for e in c["env"]:
        for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
            assert ref in defined, f"env {e['name']} uses $({ref}) before it is defined"
        defined.append(e["name"])
    for text in c["args"] + [m.get("subPathExpr", "") for m in c["volumeMounts"]]:
        for ref in re.findall(r"\$\((\w+)\)", text):
            assert ref in defined, f"{text!r} uses undefined $({ref})"
    # No secret material anywhere in the rendered manifests.
    for path in KUSTOMIZATIONS:
        assert not [d for d in render(path) if d["kind"] == "Secret"], f"{path} ships a Secret"


def test_gpu_overlay_requests_one_gpu_on_the_engine_pool():
    dep, c = triton("overlays/gpu")
    res = c["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    spec = dep["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert "--allow-gpu-metrics=false" not in c["args"]
    cm = one(render("overlays/gpu"), "ConfigMap", "drape-release")
    assert cm["data"]["DRAPE_TARGET"] == "gpu"
    # Engines are GPU-architecture specific: built on the same pool that serves them.
    job = one(render("jobs/build-engines"), "Job", "drape-build-engines")["spec"]["template"]["spec"]
    assert job["nodeSelector"] == spec["nodeSelector"]
    assert job["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_gpu_overlay_checks_plans_before_triton_starts(cpu_repo):
    dep, c = triton("overlays/gpu")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["python3", "-m", "drape_serving.plan_check"]
    assert init["image"] == c["image"] and init["resources"]["limits"]["nvidia.com/gpu"] == "1"
    served = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
    assert next(m for m in init["volumeMounts"] if m["name"] == served["name"]) == served
    # The real CLI accepts the init container's command line (on a repository without plans, with the runtime
    # given explicitly since this machine has no GPU).
    args = [a.replace("=/models", f"={cpu_repo}") for a in init["args"]]
    out = subprocess.run([sys.executable, "-m", "drape_serving.plan_check", *args, "--trt-version", "10.5.0",
                          "--gpu-arch", "8.9"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "initContainers" not in triton("overlays/gpu-s3")[0]["spec"]["template"]["spec"]


def test_cpu_overlay_runs_without_gpus():
    dep, c = triton("overlays/cpu")
    assert not any("nvidia.com/gpu" in c["resources"].get(k, {}) for k in ("limits", "requests"))
    assert "--pinned-memory-pool-byte-size=0" in c["args"] and "--allow-gpu-metrics=false" in c["args"]
    assert one(render("overlays/cpu"), "ConfigMap", "drape-release")["data"]["DRAPE_TARGET"] == "cpu"


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_repository_volume_is_a_read_only_versioned_subpath(overlay):
    dep, c = triton(f"overlays/{overlay}")
    spec = dep["spec"]["template"]["spec"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True and mount["subPathExpr"] == "repository/$(DRAPE_TARGET)/$(DRAPE_MODEL_VERSION)"
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["persistentVolumeClaim"]["claimName"] == "drape-model-repository"
    pvc = one(render(f"overlays/{overlay}"), "PersistentVolumeClaim", "drape-model-repository")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    # The release ConfigMap has a content hash in its name: a new version rolls the pods, undo rolls back.
    cm_ref = env_value(c, "DRAPE_MODEL_VERSION")["valueFrom"]["configMapKeyRef"]["name"]
    assert re.fullmatch(r"drape-release-[a-z0-9]{10}", cm_ref)
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]


def test_s3_overlay_reads_the_repository_from_object_storage():
    dep, c = triton("overlays/gpu-s3")
    assert env_value(c, "MODEL_REPOSITORY")["value"].startswith("s3://")
    assert not any(m["mountPath"] == "/models" for m in c["volumeMounts"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env_value(c, name)["valueFrom"]["secretKeyRef"]["name"] == "drape-s3"
    tmp = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "20Gi"


# ------------------------------------------------------------------------------ services, policy, autoscaling


def _selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In":
            ok &= labels.get(expr["key"]) in expr["values"]
        elif expr["operator"] == "Exists":
            ok &= expr["key"] in labels
        else:
            raise AssertionError(f"operator {expr['operator']} not handled")
    return ok


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdb_and_hpa_point_at_the_workloads(overlay):
    docs = render(f"overlays/{overlay}")
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}
    for svc in (d for d in docs if d["kind"] == "Service"):
        targets = [n for n, t in pods.items() if _selects({"matchLabels": svc["spec"]["selector"]}, t["metadata"]["labels"])]
        assert targets == [svc["metadata"]["name"]], svc["metadata"]["name"]
        port_names = {p["name"] for c in pods[targets[0]]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    pdb = one(docs, "PodDisruptionBudget", "drape-triton")
    assert _selects(pdb["spec"]["selector"], pods["drape-triton"]["metadata"]["labels"])
    hpa = one(docs, "HorizontalPodAutoscaler", "drape-triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "drape-triton"}
    metric = hpa["spec"]["metrics"][0]
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in adapter}
    assert hpa["spec"]["minReplicas"] >= (2 if overlay.startswith("gpu") else 1)


def test_prometheus_adapter_serves_a_recorded_per_pod_series():
    from drape_monitoring.rules import load_groups

    rule = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"][0]
    series = rule["seriesQuery"].split("{", 1)[0]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    recorded = {r["record"]: r["expr"] for g in load_groups() for r in g["rules"] if "record" in r}
    assert series in recorded, "the adapter must read a recording rule shipped in the PrometheusRule"
    assert re.search(r"by \(namespace, pod\b", recorded[series]), "the series must keep namespace and pod"
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_network_policies_default_deny_and_open_only_what_is_needed():
    docs = render("overlays/gpu")
    pols = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = pols["drape-default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    inference = pols["drape-triton-inference"]
    assert {p["port"] for r in inference["ingress"] for p in r["ports"]} == {"http", "grpc"}
    assert any("namespaceSelector" in f for r in inference["ingress"] for f in r["from"])
    prober = one(docs, "Deployment", "drape-prober")["spec"]["template"]["metadata"]["labels"]
    assert any(_selects(f["podSelector"], prober) for r in inference["ingress"] for f in r["from"] if "podSelector" in f
               and "namespaceSelector" not in f)
    metrics = pols["drape-metrics-from-monitoring"]
    assert {p["port"] for r in metrics["ingress"] for p in r["ports"]} == {"metrics"}
    (src,) = metrics["ingress"][0]["from"]
    assert src["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


def test_servicemonitor_scrapes_triton_and_prober_metrics_ports():
    """Structural check of the CRD: selects exactly the two Services, through a port both have."""
    docs = render("overlays/gpu")
    sm = one(docs, "ServiceMonitor", "drape")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    services = [d for d in docs if d["kind"] == "Service" and _selects(sm["spec"]["selector"], d["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in services) == ["drape-prober", "drape-triton"]
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings"}
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
    # Standalone Prometheus uses the Service names as job names, as the ServiceMonitor does.
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert {j["job_name"] for j in prom["scrape_configs"]} == {s["metadata"]["name"] for s in services}


def test_prometheusrule_structure():
    pr = one(render("overlays/gpu"), "PrometheusRule", "drape")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["metadata"]["namespace"] == "drape"
    for group in pr["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
            assert ("record" in rule) != ("alert" in rule) and rule["expr"]


# ---------------------------------------------------------------------------------------------------- Jobs


def _script(job: dict) -> str:
    c = job["spec"]["template"]["spec"]["containers"][0]
    return "\n".join(c.get("args", []))


def _commands(script: str, module: str, env: dict[str, str]) -> list[list[str]]:
    """The argv of every `python -m <module> ...` line, shell variables expanded from ``env``."""
    out = []
    for line in script.splitlines():
        line = line.strip()
        for var, value in env.items():
            line = line.replace(f"${{{var}}}", value).replace(f"${var}", value)
        words = shlex.split(line) if line else []
        if len(words) > 2 and words[1:3] == ["-m", module]:
            out.append(words[3:])
    return out


def test_job_versions_match_the_overlays():
    serving = {o: one(render(f"overlays/{o}"), "ConfigMap", "drape-release")["data"] for o in ("gpu", "cpu")}
    assert serving["gpu"]["DRAPE_MODEL_VERSION"] == serving["cpu"]["DRAPE_MODEL_VERSION"]
    for job in JOBS:
        cm = one(render(f"jobs/{job}"), "ConfigMap", "drape-job-release")["data"]
        assert cm["DRAPE_MODEL_VERSION"] == serving["gpu"]["DRAPE_MODEL_VERSION"], job
    assert one(render("jobs/record-golden"), "ConfigMap", "drape-job-release")["data"]["DRAPE_TARGET"] == "gpu"


def test_build_engines_job_runs_the_export_commands():
    from drape_export.__main__ import COMMANDS, build_parser

    job = one(render("jobs/build-engines"), "Job", "drape-build-engines")
    cmds = _commands(_script(job), "drape_export", {"DRAPE_MODEL_VERSION": "v1", "onnx": "/models/onnx/v1"})
    assert [c[0] for c in cmds] == ["trt", "repo"]
    repo = build_parser().parse_args(cmds[1])
    assert repo.target == "gpu" and repo.onnx_dir == "/models/onnx/v1" and repo.out == "/models/repository/gpu/v1"
    if "trt" not in COMMANDS:
        pytest.skip("drape_export has no `trt` command yet: its arguments cannot be checked")
    trt = build_parser().parse_args(cmds[0])
    assert trt.onnx_dir == repo.onnx_dir  # plans are written next to the ONNX the repo step reads


def test_assemble_cpu_job_writes_the_served_cpu_path():
    from drape_export.__main__ import build_parser

    job = one(render("jobs/assemble-cpu"), "Job", "drape-assemble-cpu")
    (cmd,) = _commands(_script(job), "drape_export", {"DRAPE_MODEL_VERSION": "v1"})
    args = build_parser().parse_args(cmd)
    assert args.target == "cpu" and args.out == "/models/repository/cpu/v1"


def test_record_golden_job_writes_where_the_prober_reads():
    from drape_monitoring.prober import build_parser

    job = one(render("jobs/record-golden"), "Job", "drape-record-golden")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python3", "-m", "drape_monitoring.prober"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "record" and args.golden == "/models/golden/$(DRAPE_TARGET)/$(DRAPE_MODEL_VERSION)"
    prober = one(render("overlays/gpu"), "Deployment", "drape-prober")["spec"]["template"]["spec"]["containers"][0]
    run = build_parser().parse_args(prober["args"])
    mount = next(m for m in prober["volumeMounts"] if m["mountPath"] == run.golden)
    assert "/models/" + mount["subPathExpr"] == args.golden and mount["readOnly"] is True
    assert run.url == "drape-triton:8001"
    inputs = one(render("jobs/record-golden"), "ConfigMap", "drape-golden-inputs")
    assert set(inputs["binaryData"]) == {"person.jpg", "garment.jpg"}


def test_training_job_uses_the_project_entry_points():
    from drape_train.train import parse_args

    job = one(render("jobs/train"), "Job", "drape-train")
    script = _script(job)
    # one rank per GPU the pod is given, and a pod that sees none fails instead of training on the CPU
    assert 'deepspeed --num_gpus "$gpus" training/drape_train/train.py' in script
    prefix = script[:script.index("deepspeed --num_gpus")]
    prefix = prefix[prefix.index("gpus=$("):]
    for visible, ok in (("0", False), ("4", True)):
        fake = f"python() {{ echo {visible}; }}\n"     # what torch.cuda.device_count() prints in the pod
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", fake + prefix + 'echo "ranks=$gpus"'],
                              capture_output=True, text=True, timeout=30)
        assert (done.returncode == 0) == ok, done.stderr
        assert (f"ranks={visible}" in done.stdout) if ok else "no GPU visible to the pod" in done.stderr
    for cfg in re.findall(r"training/configs/\S+\.yaml", script):
        assert (ROOT / cfg).is_file(), cfg
    # a retry (backoffLimit) resumes each network; a new model version trains into a folder of its own
    assert job["spec"]["backoffLimit"] >= 1
    line = next(ln for ln in script.splitlines() if "training/drape_train/train.py" in ln)
    words = shlex.split(line.replace("$configs", "training/configs/gmm.yaml").replace("${DRAPE_MODEL_VERSION}", "v1"))
    train = parse_args(words[words.index("training/drape_train/train.py") + 1:])
    assert train.resume and train.out == "/work/checkpoints/v1"
    (export,) = _commands(script, "drape_export", {"DRAPE_MODEL_VERSION": "v1"})
    assert export[:1] == ["onnx"] and "/models/onnx/v1" in export
    assert export[export.index("--checkpoints") + 1] == train.out
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"


# ------------------------------------------------------------------------------------------------ Dockerfile


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            m = re.fullmatch(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            current = m.group(2)
            stages[current] = [line]
        else:
            assert current, line
            stages[current].append(line)
    return stages


def test_dockerfile_pins_ngc_images_of_one_release_and_runs_as_non_root():
    stages = _stages()
    assert set(stages) == {"serving", "tools"}
    images = {name: lines[0].split()[1] for name, lines in stages.items()}
    assert images["serving"] == f"nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3"
    assert images["tools"] == f"nvcr.io/nvidia/pytorch:{NGC_RELEASE}-py3"  # same TensorRT as the serving image
    for name, lines in stages.items():
        users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name} must end as a non-root user"
        assert re.fullmatch(r"\d+:\d+", users[-1]), "numeric uid:gid so runAsNonRoot can verify it"
    # The Deployments run the serving image at the same release.
    _, c = triton("overlays/gpu")
    assert f"triton{NGC_RELEASE}" in c["image"]


def test_serving_image_installs_no_torch():
    """The serving stage installs only extras whose requirements (and the base ones) are torch-free."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runs = [ln for ln in _stages()["serving"] if ln.upper().startswith("RUN ")]
    installs = [m for ln in runs for m in re.findall(r"pip install\s+(?:-e\s+)?\"?\.\[([^\]]*)\]\"?", ln)]
    assert len(installs) == 1, runs
    extras = installs[0].split(",")
    assert "training" not in extras and "tensorrt" not in extras
    reqs = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    names = {re.split(r"[\s<>=!~\[;]", r, 1)[0].lower() for r in reqs}
    forbidden = {"torch", "torchvision", "deepspeed", "kornia", "nvidia-pytriton"}
    assert not names & forbidden, names & forbidden
    assert {"onnxruntime", "prometheus-client", "tritonclient"} <= names
    # Nothing else is pip-installed by name, and the build itself refuses an importable torch.
    assert not any(re.search(r"pip install[^&]*\btorch\b", ln) for ln in runs)
    assert any("find_spec('torch')" in ln for ln in runs)


def test_serving_image_file_set_builds_the_torch_free_packages(tmp_path):
    """Build a wheel from exactly what the serving stage COPYs: the runtime packages, python models and configs
    are in; drape_train (the training code) is not."""
    src = tmp_path / "src"
    for line in _stages()["serving"]:
        if line.upper().startswith("COPY "):
            *sources, dest = line.split()[1:]
            for s in sources:
                target = src / dest.rstrip("/") if dest not in ("./", ".") else src
                path = ROOT / s.rstrip("/")
                if path.is_dir():
                    shutil.copytree(path, src / s.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
    assert not (src / "training").exists()
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                         env={**os.environ, "PIP_NO_INDEX": "1"})
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    top = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {"drape_core", "drape_runtime", "drape_serving", "drape_client", "drape_monitoring", "drape_export"} <= top
    assert "drape_train" not in top
    # The python models and configs the repository assembly needs sit next to drape_serving (editable install).
    assert (src / "model_repository" / "python_models" / "preprocess.py").is_file()
    assert list((src / "model_repository" / "configs").glob("*.pbtxt"))
