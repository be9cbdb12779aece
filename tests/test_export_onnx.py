"""Checkpoint -> ONNX: simplification, parity on random and real samples, the FP16 twin with FP32 I/O.

Runs the real export on the trained quick checkpoints (build/checkpoints) and checks what the pipeline wrote
to build/onnx; the FP16 graph is executed with ONNX Runtime on CPU (TensorRT runs it on GPU machines).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from conftest import CHECKPOINTS, ONNX_DIR
from drape_export.onnx_export import (
    FP16_FILE,
    ONNX_FILE,
    PARITY_TOL,
    RESAMPLED_MAX_TOL,
    DiffStats,
    RealSamples,
    export_network,
    ort_run,
    ort_session,
    output_diffs,
    parity_failures,
    parity_tolerance,
    to_fp16,
    toposort,
)
from drape_train.models import NETWORKS
from drape_train.models.gmm import GMM

from test_training import TRT_OPS


def _card(name: str) -> dict:
    path = ONNX_DIR / name / "card.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make quick` (make test does it first)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", NETWORKS)
def test_pipeline_export_is_simplified_checked_and_matches_pytorch(name):
    card = _card(name)
    o = card["onnx"]
    assert o["simplifier"].startswith("onnxsim ")
    assert o["nodes"] < o["nodes_exported"], "simplification removed nothing"
    assert o["parity_real"]["samples"] >= 2
    per = o["parity_outputs"]
    assert list(per) == [s["name"] for s in card["outputs"]]
    resampled = GMM.resampled_outputs if name == "gmm" else ()   # only the warp gets the resampling allowance
    for out, rec in per.items():
        assert rec["tolerance"] == parity_tolerance(out, resampled)
        for where in ("random", "real"):
            d = rec[where]
            assert d["max_abs"] <= rec["tolerance"]["max_abs"], (out, where, d)
            assert rec["tolerance"]["p999_abs"] is None or d["p999_abs"] <= rec["tolerance"]["p999_abs"], (out, where, d)
    assert o["parity_random_max_abs_diff"] == max(r["random"]["max_abs"] for r in per.values())
    model = onnx.load(str(ONNX_DIR / name / ONNX_FILE))
    onnx.checker.check_model(model, full_check=True)
    assert sorted({n.op_type for n in model.graph.node}) == o["ops"]
    assert set(o["ops"]) <= TRT_OPS, f"ops outside the TensorRT allow-list: {sorted(set(o['ops']) - TRT_OPS)}"
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param, "the batch axis must stay dynamic after simplification"


@pytest.mark.parametrize("name", NETWORKS)
def test_fp16_twin_keeps_fp32_io_and_stays_close(name, tmp_path):
    card = _card(name)
    path = ONNX_DIR / name / FP16_FILE
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    io = list(model.graph.input) + list(model.graph.output)
    assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT}, "graph I/O must stay FP32"
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer), "weights are not FP16"
    assert "Cast" in {n.op_type for n in model.graph.node}
    assert {n.op_type for n in model.graph.node} <= TRT_OPS
    recorded = card["onnx"]["fp16"]["vs_fp32_on_real"]
    # measured again here, on the card's real samples through ORT (FP16 graph on CPU vs FP32 graph)
    res = card["resolution"]
    xs = RealSamples(tmp_path, res["height"], res["width"], n=2).inputs(card)
    stats = DiffStats.of(ort_run(ort_session(path), card, xs), ort_run(ort_session(ONNX_DIR / name / ONNX_FILE), card, xs))
    assert stats.mean_abs <= 1e-2 and stats.p999_abs <= 0.1, stats
    assert recorded["mean_abs"] <= 1e-2 and recorded["p999_abs"] <= 0.1, recorded
    assert stats.max_abs > 0, "FP16 identical to FP32: the conversion did nothing"
    assert set(card["onnx"]["fp16"]["ort_cpu_ms_batch1"]) == {"fp32", "fp16"}


def test_real_samples_follow_the_training_views(tmp_path):
    card = _card("tom")
    res = card["resolution"]
    samples = RealSamples(tmp_path, res["height"], res["width"], n=2)
    xs = samples.inputs(card)
    assert [list(x.shape[1:]) for x in xs] == [s["shape"] for s in card["inputs"]]
    person, logits, warped, mask = xs
    assert 0.0 <= person.min() and person.max() <= 1.0 and person.std() > 0.05
    assert set(np.unique(logits)) <= {0.0, 12.0}  # ground-truth parse -> one-hot logits, as in training
    assert set(np.unique(mask)) <= {0.0, 1.0} and mask.mean() > 0.01  # warped garment mask is not empty
    with pytest.raises(ValueError, match="rendered at"):
        RealSamples(tmp_path / "small", 64, 48, n=1).inputs(card)


def test_export_network_writes_both_graphs_and_the_measurements(tmp_path):
    """The real export of one trained network, end to end (the smallest: garment_seg)."""
    if not (CHECKPOINTS / "garment_seg" / "weights.pt").is_file():
        pytest.fail(f"{CHECKPOINTS}/garment_seg is missing: run `make quick`")
    card = export_network(CHECKPOINTS / "garment_seg", tmp_path / "garment_seg")
    assert (tmp_path / "garment_seg" / ONNX_FILE).is_file() and (tmp_path / "garment_seg" / FP16_FILE).is_file()
    assert json.loads((tmp_path / "garment_seg" / "card.json").read_text()) == card
    assert card["onnx"]["parity_max_abs_diff"] <= PARITY_TOL
    assert not [p for p in (tmp_path / "garment_seg").iterdir() if p.name.startswith(".")]


def _warp(image: np.ndarray, shift_px: float = 0.0, jitter: float = 0.0) -> np.ndarray:
    """``image`` [1,C,H,W] through grid_sample at the pixel centres, moved by ``shift_px`` in x and by float noise."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = image.shape
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h * 2 - 1, (torch.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    grid = torch.stack([xs + shift_px * 2 / w, ys], -1)[None].double()
    grid = grid + jitter * torch.randn(grid.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return F.grid_sample(torch.from_numpy(image).double(), grid, align_corners=False).float().numpy()


def test_parity_allows_float_noise_in_a_warp_but_not_a_shifted_one():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    checks = np.kron(rng.integers(0, 2, (1, 3, 8, 6)), np.ones((1, 1, 32, 32))).astype(np.float32)
    garment = ndimage.gaussian_filter(checks, (0, 0, 0.7, 0.7))          # an anti-aliased 256x192 print
    ref = _warp(garment, shift_px=0.3)
    noisy = _warp(garment, shift_px=0.3, jitter=5e-6)    # the sampling coordinates off in their last float32 bits
    stats = output_diffs(["warped_garment"], [noisy], [ref])["warped_garment"]
    assert PARITY_TOL < stats.max_abs <= RESAMPLED_MAX_TOL and stats.p999_abs <= PARITY_TOL, stats
    assert parity_failures({"warped_garment": stats}, GMM.resampled_outputs) == []
    # the same numbers on an output that is not resampled fail: the allowance is the warp's only
    assert parity_failures({"warped_garment": stats}, ()) == [f"warped_garment max {stats.max_abs:.2e} > {PARITY_TOL:g}"]
    # an export fault in the warp (half a pixel) moves every edge and fails at p99.9 and at worst
    shifted = output_diffs(["warped_garment"], [_warp(garment, shift_px=0.8)], [ref])
    failures = parity_failures(shifted, GMM.resampled_outputs)
    assert [f.split()[1] for f in failures] == ["max", "p99.9"], failures
    # a single far-off pixel fails the worst case even though the percentile holds
    spike = ref.copy()
    spike[0, 0, 5, 5] += 0.05
    failures = parity_failures(output_diffs(["warped_garment"], [spike], [ref]), GMM.resampled_outputs)
    assert failures == ["warped_garment max 5.00e-02 > 0.01"]
    with pytest.raises(ValueError, match="2 names, 1 outputs"):
        output_diffs(["a", "b"], [ref], [ref])


def test_toposort_orders_nodes_and_rejects_dangling_inputs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Neg", ["x"], ["a"])]  # consumer first
    graph = helper.make_graph(nodes, "g", [x], [y])
    toposort(graph)
    assert [n.op_type for n in graph.node] == ["Neg", "Relu"]
    bad = helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="missing"):
        toposort(bad)


def test_to_fp16_on_a_small_graph_casts_at_the_boundary():
    w = onnx.numpy_helper.from_array(np.full((2, 2), 0.5, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    half = to_fp16(model)
    assert [n.op_type for n in half.graph.node] == ["Cast", "MatMul", "Cast"]
    assert half.graph.initializer[0].data_type == TensorProto.FLOAT16
    sess = onnxruntime.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.array([[1.0, 3.0]], np.float32)})
    assert y.dtype == np.float32 and np.allclose(y, [[2.0, 2.0]])


def test_diff_stats():
    a = [np.zeros((2, 1000), np.float32)]
    b = [np.zeros((2, 1000), np.float32)]
    b[0][0, 0] = 0.5
    s = DiffStats.of(a, b)
    assert s.max_abs == 0.5 and s.mean_abs == pytest.approx(0.5 / 2000) and s.p999_abs < 0.5
    assert DiffStats.of([np.array([np.nan])], [np.array([0.0])]).max_abs == float("inf")
    with pytest.raises(ValueError, match="shape"):
        DiffStats.of([np.zeros(3)], [np.zeros(4)])


def test_sample_inputs_are_images_and_saturated_logits_of_region_maps():
    from drape_core.card import TensorSpec
    from drape_export.onnx_export import sample_inputs

    card = [TensorSpec(name="parsing_logits", dtype="float32", shape=(20, 64, 48)),
            TensorSpec(name="garment", dtype="float32", shape=(3, 64, 48)),
            TensorSpec(name="garment_mask_logits", dtype="float32", shape=(1, 64, 48))]
    parse, image, mask = sample_inputs(card, 2, seed=0)
    assert parse.shape == (2, 20, 64, 48) and image.shape == (2, 3, 64, 48) and mask.shape == (2, 1, 64, 48)
    assert all(x.dtype == np.float32 for x in (parse, image, mask))
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.2        # noise images
    assert np.array_equal(parse.sum(1), np.full((2, 64, 48), 12.0, np.float32))   # one label per pixel, logit 12
    labels = parse.argmax(1)
    blocks = labels.reshape(2, 4, 16, 3, 16)                                       # 16x16 regions, one label each
    assert (blocks == blocks[:, :, :1, :, :1]).all() and len(np.unique(labels)) > 5
    assert set(np.unique(mask)) == {-6.0, 6.0}
    assert not np.array_equal(sample_inputs(card, 2, seed=1)[0], parse)
