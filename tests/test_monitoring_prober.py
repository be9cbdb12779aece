"""The golden-request prober: its colour maths, its CLI, and what it reports about real Triton servers.

The point of the prober is a server that passes health checks but answers wrongly. The last test builds exactly
that: a copy of the trained repository whose try-on network has perturbed weights. Triton loads it and reports
ready; the prober must flag `tryon` as a mismatch and still pass `recolor`, which does not use that network.
"""
from __future__ import annotations

import glob
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drape_monitoring import prober as P

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "build" / "samples"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drape_monitoring.prober", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------------------------------------------ pure functions


def test_srgb_to_lab_matches_reference_values():
    # CIE reference values (D65): white, black, sRGB primaries.
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    want = np.array([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18],
                     [32.30, 79.19, -107.86]])
    np.testing.assert_allclose(P.srgb_to_lab(rgb), want, atol=0.05)


def test_compare_output_measures_delta_e_and_mask_flips():
    t = P.Thresholds(max_delta_e=2.0, max_mask_mismatch=0.01)
    grey = np.full((40, 30, 3), 128, np.uint8)
    same = P.compare_output("img", grey, grey.copy(), t)
    assert same.ok and same.delta_e == 0 and same.mad == 0
    # One channel +10 on a mid grey is a visible colour shift (ΔE ~ 5-9): a mismatch.
    shifted = grey.copy()
    shifted[..., 0] += 10
    q = P.compare_output("img", shifted, grey, t)
    assert not q.ok and 3 < q.delta_e < 12 and q.mad == pytest.approx(10 / 3)
    # +1 in one channel is below a just-noticeable difference: still ok.
    assert P.compare_output("img", grey + np.uint8(1), grey, t).ok

    mask = np.zeros((100, 100), np.uint8)
    flipped = mask.copy()
    flipped[:2, :] = 255  # 2% of the pixels
    assert P.compare_output("mask", mask, mask.copy(), t).ok
    m = P.compare_output("mask", flipped, mask, t)
    assert not m.ok and m.mask_mismatch == pytest.approx(0.02) and math.isnan(m.delta_e)

    wrong_shape = P.compare_output("img", grey[:20], grey, t)
    assert not wrong_shape.ok and "golden" in wrong_shape.detail


def test_thresholds_and_config_are_validated():
    with pytest.raises(ValueError):
        P.Thresholds(max_delta_e=0)
    with pytest.raises(ValueError):
        P.Thresholds(max_mask_mismatch=1.5)
    with pytest.raises(ValueError):
        P.ProberConfig(url="x:1", golden_dir=Path("."), protocol="udp")
    with pytest.raises(ValueError):
        P.ProberConfig(url="x:1", golden_dir=Path("."), interval_s=0)


def test_prober_never_imports_torch_and_has_help():
    code = ("import sys, drape_monitoring.prober, drape_monitoring.rules, drape_monitoring.promql; "
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    for args in ([], ["record"], ["run"]):
        out = _cli(*args, "--help")
        assert out.returncode == 0 and "usage: drape-prober" in out.stdout
    assert "--golden" in _cli("run", "--help").stdout and "--once" in _cli("run", "--help").stdout


def test_run_without_golden_set_fails_clearly(tmp_path):
    out = _cli("run", "--once", "--url", "127.0.0.1:1", "--golden", str(tmp_path / "none"))
    assert out.returncode == 2 and "prober record" in out.stderr


# ------------------------------------------------------------------------------------------------ real servers


@pytest.fixture(scope="module")
def golden(real_server, tmp_path_factory) -> Path:
    """A golden set recorded by the CLI against the real, known-good server."""
    out = tmp_path_factory.mktemp("golden") / "set"
    rec = _cli("record", "--url", real_server.grpc_url, "--golden", str(out),
               "--person", str(SAMPLES / "person.jpg"), "--garment", str(SAMPLES / "garment.jpg"))
    assert rec.returncode == 0, rec.stderr
    return out



@pytest.mark.server
def test_record_writes_a_self_consistent_golden_set(golden):
    manifest = json.loads((golden / "manifest.json").read_text())  # strict JSON: no NaN
    assert set(manifest["ensembles"]) == {"tryon", "recolor"}
    loaded = P.load_golden(golden)
    assert loaded.cases["tryon"].outputs["tryon_image"].dtype == np.uint8
    h, w = loaded.cases["recolor"].outputs["garment_mask"].shape
    assert loaded.cases["recolor"].outputs["recolored_image"].shape == (h, w, 3)
    # The server answered the same request twice within the thresholds it was recorded with.
    base = manifest["ensembles"]["tryon"]["baseline"]["tryon_image"]
    assert base["delta_e"] <= manifest["thresholds"]["max_delta_e"]
    # Tampered inputs are refused rather than probed with.
    bad = golden.parent / "tampered"
    shutil.copytree(golden, bad)
    (bad / "tryon" / manifest["ensembles"]["tryon"]["inputs"]["person_image"]).write_bytes(b"not the input")
    with pytest.raises(ValueError, match="checksum"):
        P.load_golden(bad)


@pytest.mark.server
def test_healthy_server_passes_every_probe(real_server, golden):
    out = _cli("run", "--once", "--url", real_server.grpc_url, "--golden", str(golden))
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0, out.stdout + out.stderr
    assert {r["ensemble"]: r["result"] for r in results} == {"tryon": "ok", "recolor": "ok"}
    assert all(q["delta_e"] <= 2.0 for r in results for q in r["quality"].values() if "delta_e" in q)


@pytest.mark.server
def test_exported_series_after_a_round(real_server, golden):
    from prometheus_client import generate_latest

    with P.make_client(real_server.grpc_url) as client:
        prober = P.Prober(client, P.load_golden(golden))
        text = generate_latest(prober.registry).decode()
        assert 'drape_prober_probes_total{ensemble="tryon",result="error"} 0.0' in text  # exists before any probe
        prober.probe_all()
        prober.probe_all()
        text = generate_latest(prober.registry).decode()
    assert 'drape_prober_probes_total{ensemble="tryon",result="ok"} 2.0' in text
    assert 'drape_prober_probes_total{ensemble="recolor",result="ok"} 2.0' in text
    assert 'drape_prober_success{ensemble="recolor"} 1.0' in text
    assert "drape_prober_ready 1.0" in text
    assert 'drape_prober_latency_seconds_count{ensemble="tryon"} 2.0' in text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert set(P.METRIC_NAMES) <= names


def test_unreachable_server_is_an_error_probe(golden_free_port_set):
    url, golden_dir = golden_free_port_set
    out = _cli("run", "--once", "--timeout", "3", "--url", url, "--golden", str(golden_dir), timeout=60)
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1
    assert {r["result"] for r in results} == {"error"} and all(r["error"] for r in results)


@pytest.fixture
def golden_free_port_set(tmp_path):
    """A syntactically valid golden set (tiny images) and an address where nothing listens."""
    from drape_serving.server import free_port
    from PIL import Image

    img = np.full((8, 6, 3), 100, np.uint8)
    buf = tmp_path / "x.png"
    Image.fromarray(img).save(buf)
    data = buf.read_bytes()
    manifest = {"recorded_at": "", "source": "", "thresholds": {"max_delta_e": 2.0, "max_mask_mismatch": 0.01},
                "ensembles": {}}
    import hashlib

    for spec in (P.contract.TRYON, P.contract.RECOLOR):
        d = tmp_path / "golden" / spec.name
        d.mkdir(parents=True)
        files = {"inputs": {}, "outputs": {}, "sha256": {}, "baseline": {}}
        for name in spec.input_names:
            (d / f"{name}.png").write_bytes(data)
            files["inputs"][name] = f"{name}.png"
            files["sha256"][name] = hashlib.sha256(data).hexdigest()
        for name in spec.output_names:
            Image.fromarray(img if name != "garment_mask" else img[..., 0]).save(d / f"{name}.png")
            files["outputs"][name] = f"{name}.png"
        manifest["ensembles"][spec.name] = files
    (tmp_path / "golden" / "manifest.json").write_text(json.dumps(manifest))
    return f"127.0.0.1:{free_port()}", tmp_path / "golden"


@pytest.mark.server
@pytest.mark.slow
def test_server_that_is_ready_but_wrong_is_caught(cpu_repo, golden, tmp_path):
    """Perturb the try-on network's weights: Triton is ready, tryon answers differ from golden, recolor does not."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from drape_serving.server import start_server

    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo, ignore=shutil.ignore_patterns("__pycache__"))
    plans = sorted(glob.glob(str(repo / "tom" / "*" / "model.onnx")))
    assert plans, "no tom/<version>/model.onnx in the repository"
    rng = np.random.default_rng(0)
    for path in plans:  # every version, whichever one the server picks
        model = onnx.load(path)
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.size > 1:
                noisy = w + rng.normal(0, 3 * float(w.std()) + 1e-3, w.shape).astype(np.float32)
                init.CopyFrom(numpy_helper.from_array(noisy, init.name))
        onnx.save(model, path)

    with start_server(repo, log_file=tmp_path / "triton.log", ready_timeout=240) as broken:
        assert broken.is_ready()  # health checks pass
        out = _cli("run", "--once", "--url", broken.grpc_url, "--golden", str(golden))
    results = {r["ensemble"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert out.returncode == 1, out.stdout + out.stderr
    assert results["tryon"]["result"] == "mismatch"
    assert results["tryon"]["quality"]["tryon_image"]["delta_e"] > 2.0
    assert results["recolor"]["result"] == "ok"
