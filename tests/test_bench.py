"""The side-by-side benchmark: its FLOP count, that (a)/(b)/(c) compute the same thing, its ratios, and a smoke run.

No timing assertions: the numbers go to BENCHMARKS.md; these tests check the measuring instrument.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import pipelines  # noqa: E402
from flops import count_macs  # noqa: E402

from drape_core import contract  # noqa: E402


def _tiny_graph():
    """Conv 3->8 3x3 (16x12, pad 1), grouped Conv 8->8 g=4 1x1, MatMul [1,8,192]x[192,5], Gemm [7,5]x[6,5]^T."""
    rng = np.random.default_rng(0)
    init = [helper.make_tensor(n, TensorProto.FLOAT, s, rng.random(int(np.prod(s))).astype(np.float32))
            for n, s in (("w1", [8, 3, 3, 3]), ("w2", [8, 2, 1, 1]), ("m", [192, 5]), ("g", [6, 5]))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=4),
        helper.make_node("Reshape", ["c2", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "m"], ["mm"]),
        helper.make_node("Gemm", ["y", "g"], ["out2"], transB=1),
    ]
    init.append(helper.make_tensor("shape", TensorProto.INT64, [3], [1, 8, 192]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 12]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 5])],
        [helper.make_tensor_value_info("mm", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("out2", TensorProto.FLOAT, None)],
        init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_count_macs_by_hand():
    g = count_macs(_tiny_graph())
    conv = 8 * 16 * 12 * 3 * 9 + 8 * 16 * 12 * 2 * 1
    assert g.by_op == {"Conv": conv, "MatMul": 8 * 192 * 5, "Gemm": 7 * 5 * 6}
    assert g.flops == 2 * (conv + 8 * 192 * 5 + 7 * 5 * 6) and g.unresolved == []
    assert count_macs(_tiny_graph(), batch=3).by_op["Conv"] == 3 * conv   # the batch axis scales convs only


def test_count_macs_agrees_with_torch_flop_counter(cpu_repo):
    """Two independent counts of the served networks: the ONNX graph walk and torch's FlopCounterMode."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from conftest import CHECKPOINTS
    from drape_export.onnx_export import load_network, sample_inputs

    for name, spec in contract.NETWORKS.items():
        net, card = load_network(CHECKPOINTS / name)
        xs = [torch.from_numpy(x) for x in sample_inputs(card, 1, seed=0)]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(*xs)
        g = count_macs(pipelines.version_dir(cpu_repo / spec.model_name) / "model.onnx")
        assert g.unresolved == [], name
        assert g.flops == pytest.approx(counter.get_total_flops(), rel=0.01), name


@pytest.mark.server
def test_in_process_pipelines_compute_what_triton_serves(real_server, cpu_repo):
    """(b) replays the ensemble exactly (same uint8 answer as Triton); (a) differs only by float rounding."""
    from conftest import CHECKPOINTS
    from drape_client import DrapeClient

    requests = pipelines.make_requests(1, (300, 220))
    ort_nets, eager_nets = pipelines.ort_networks(cpu_repo), pipelines.torch_networks(CHECKPOINTS)
    with DrapeClient(real_server.grpc_url) as client:
        for spec in (contract.TRYON, contract.RECOLOR):
            req = requests[spec.name][0]
            served = client.infer(spec, req)
            ort = pipelines.Pipeline(cpu_repo, spec, ort_nets)(req)
            eager = pipelines.Pipeline(cpu_repo, spec, eager_nets)(req)
            assert [o.shape for o in ort] == [o.shape for o in served]
            assert pipelines.max_abs_diff(ort, served) <= 1, spec.name
            assert pipelines.max_abs_diff(eager, ort) <= 3, spec.name


def test_ratios():
    series = [
        {"pipeline": "eager", "ensemble": "tryon", "concurrency": 1, "throughput_rps": 2.0, "p50_ms": 500.0,
         "mean_ms": 500.0},
        {"pipeline": "ort", "ensemble": "tryon", "concurrency": 1, "throughput_rps": 5.0, "p50_ms": 200.0,
         "mean_ms": 200.0},
        {"pipeline": "triton", "ensemble": "tryon", "concurrency": 1, "throughput_rps": 4.5, "p50_ms": 220.0,
         "mean_ms": 230.0},
        {"pipeline": "triton", "ensemble": "tryon", "concurrency": 4, "throughput_rps": 6.0, "p50_ms": 600.0,
         "mean_ms": 610.0},
    ]
    r = pipelines.ratios({"series": series})["tryon"]
    assert r["throughput c=4 / eager"] == 3.0 and r["best throughput / eager"] == 3.0
    assert r["throughput c=1 / ort"] == pytest.approx(0.9)
    assert r["latency p50 c=1 / ort"] == pytest.approx(1.1) and r["latency mean c=1 / ort"] == pytest.approx(1.15)
    s = pipelines.Series("triton", "tryon", 4, [100.0, 200.0, 300.0, 400.0], wall_s=0.5)
    assert s.throughput == 8.0 and s.pct(50) == 250.0
    assert pipelines.Series("eager", "tryon", 1, [250.0, 250.0]).throughput == 4.0


@pytest.mark.server
@pytest.mark.slow
def test_benchmark_smoke_run(cpu_repo, tmp_path):
    """`make bench` end to end with tiny counts: every series, the statistics, the plot."""
    res = subprocess.run([sys.executable, str(BENCH / "pipelines.py"), "--requests", "2", "--rounds", "2",
                          "--concurrency", "1,2", "--window-s", "1", "--warmup-s", "0.3", "--distinct", "1",
                          "--warmup", "1", "--profile-requests", "1", "--net-iters", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    got = {(s["pipeline"], s["ensemble"], s["concurrency"]) for s in results["series"]}
    for ens in ("tryon", "recolor"):
        assert {("eager", ens, 1), ("ort", ens, 1), ("triton", ens, 1), ("triton", ens, 2)} <= got
        stats = results["triton_stats"][f"{ens} c=2"]
        assert stats[ens]["requests"] >= 2 and set(contract.ENSEMBLES[ens].networks) <= set(stats)
        assert results["triton_stats"][f"{ens} c=1"][ens]["requests"] == 2   # 1 per round, 2 rounds
        assert results["flops"][ens]["gflop"] > 0
    assert results["peak"]["peak"] > 0 and all(results["identical_onnx"].values())
    assert (tmp_path / "pipelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratios" in results and "target" in res.stdout
    assert {r["network"] for r in results["networks"]} == {n.model_name for n in contract.NETWORKS.values()}
    assert results["settings"]["gmm"]["instances"] >= 1


def test_recolor_gate_benchmark_runs_each_series_on_its_side_of_each_decision(tmp_path, capsys):
    """The gate benchmark's series really are 'applied', 'kept' and 'fallback' (it runs each input once through the
    postprocess and asserts the decision when it builds them), every row but the baselines carries its ratio to the
    row it adds to, and a garment band that is too small or too large is refused."""
    import recolor_gate

    out = tmp_path / "gate.json"
    assert recolor_gate.main(["--calls", "3", "--warmup", "1", "--sizes", "300x200", "--garment", "0.3",
                              "--still-garment", "0.5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(rows) == ({f"300x200 {c}, gate {g}" for c in ("applied", "kept") for g in ("on", "off")}
                         | {f"300x200 {d}, fallback on" for d in ("applied", "fallback")})
    for name, r in rows.items():
        assert r["p50_ms"] > 0 and ("ratio_p50" in r) == (not name.endswith("gate off"))
        if name.endswith("fallback on"):
            assert r["ratio_to"] == "300x200 applied, gate on"
    assert (result["garment"], result["still_garment"]) == (0.3, 0.5)
    assert "p50 ratio" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="garment fraction"):
        recolor_gate.main(["--calls", "1", "--sizes", "300x200", "--garment", "0"])


@pytest.mark.slow
def test_recolor_fallback_benchmark_compares_the_repository_with_its_fallback_off_copy(cpu_repo, tmp_path, capsys):
    """Two real servers: the repository as assembled falls back on some of the mismatched pairs, its copy with
    ``still_fallback_margin "inf"`` never does (counted on each server's metrics port), and every request is timed."""
    import recolor_fallback

    out = tmp_path / "fallback.json"
    assert recolor_fallback.main(["--repo", str(cpu_repo), "--pairs", "4", "--rounds", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    on, off = rows["fallback on"], rows["fallback off"]
    assert on["n"] == off["n"] == 4 and on["p50_ms"] > 0 and off["p50_ms"] > 0 and on["ratio_p50"] > 0
    assert sum(on["gate"].values()) == sum(off["gate"].values()) == 8        # warm-up round + 1 measured
    assert off["gate"]["fallback"] == 0 and off["gate"]["applied"] + off["gate"]["kept"] == 8
    assert "p50 ratio" in capsys.readouterr().out
    assert (cpu_repo / "recolor_postprocess" / "config.pbtxt").read_text().count('"inf"') == 0   # the copy, not it


def test_compare_builds_tells_identical_weights_from_changed_ones(tmp_path, capsys):
    """The refactoring check (benchmarks/compare_builds.py): bit-identical weights pass, one changed value fails."""
    import torch
    from compare_builds import main as compare

    for side in ("a", "b"):
        (tmp_path / side / "net").mkdir(parents=True)
        torch.save({"w": torch.arange(6.0), "b": torch.zeros(2)}, tmp_path / side / "net" / "weights.pt")
    assert compare(["weights", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    torch.save({"w": torch.arange(6.0) + 1e-7, "b": torch.zeros(2)}, tmp_path / "b" / "net" / "weights.pt")
    assert compare(["weights", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "DIFFER" in capsys.readouterr().out
    assert compare(["weights", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 1   # nothing compared
