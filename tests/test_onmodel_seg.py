"""onmodel_seg: on-model garment segmentation, single-input U-Net vs the dual variant that cross-attends to the still.

Shapes and inputs of both variants, that the dual one really reads the still, that the dataset view pairs each photo
with the still of the garment it shows, the real DeepSpeed training path (launcher -> train_onmodel_seg.py ->
drape_train.train) on a tiny rendered set, and ONNX export with only TensorRT-allow-listed ops.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drape_train.config import load_config
from drape_train.datasets import NetworkDataset
from drape_train.models import NETWORKS, RESEARCH_NETWORKS, build
from test_training import TRT_OPS

ROOT = Path(__file__).resolve().parent.parent
H, W = 64, 48
WIDTHS = [8, 16, 32]
VARIANTS = [(False, False), (True, False), (True, True)]   # (dual, cross_skip)


def tiny_net(dual: bool, cross_skip: bool = False):
    torch.manual_seed(0)
    return build("onmodel_seg", WIDTHS, H, W, stem_stride=2, heads=2, dual=dual, cross_skip=cross_skip).eval()


def inputs(net, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, H, W, generator=g) for _ in net.input_names]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from drape_train.data.layout import write_dataset

    root = tmp_path_factory.mktemp("onmodel") / "data"
    write_dataset(root, {"train": 6, "val": 2, "test": 2}, seed=5, height=H, width=W, workers=1, progress=False)
    return root


@pytest.mark.parametrize("dual,cross_skip", VARIANTS)
def test_forward_shapes_and_inputs(dual, cross_skip):
    net = tiny_net(dual, cross_skip)
    assert net.input_names == (("on_model", "still") if dual else ("on_model",))
    with torch.no_grad():
        y = net(*inputs(net, batch=3))
    assert y.shape == (3, 1, H, W) and torch.isfinite(y).all()


@pytest.mark.parametrize("cross_skip", [False, True])
def test_dual_variant_reads_the_still(cross_skip):
    """The forward is deterministic, so any difference comes from the still (exactly 0 if it were ignored)."""
    net = tiny_net(True, cross_skip)
    on_model, still = inputs(net)
    other = torch.rand_like(still)
    with torch.no_grad():
        a, b, again = net(on_model, still), net(on_model, other), net(on_model, still)
    assert torch.equal(a, again)
    assert (a - b).abs().max() > 0, "changing the still did not change the mask logits"
    still.requires_grad_(True)
    (grad,) = torch.autograd.grad(net(on_model, still).sum(), still)
    assert grad.abs().sum() > 0, "no gradient reaches the still"
    with pytest.raises(ValueError, match="still"):
        net(on_model)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="cross_skip"):
        build("onmodel_seg", WIDTHS, H, W, dual=False, cross_skip=True)
    with pytest.raises(ValueError, match="bottleneck width 30"):
        build("onmodel_seg", [8, 16, 30], H, W, heads=2)
    with pytest.raises(ValueError, match="still_widths"):
        build("onmodel_seg", WIDTHS, H, W, heads=2, still_widths=[4, 8])


def test_configs_compare_like_with_like_and_stay_out_of_make():
    """The two variants differ only in `dual`: same widths, schedule, seed, loss and DeepSpeed config."""
    dual, ds_dual = load_config(ROOT / "training/configs/onmodel_seg.yaml")
    single, ds_single = load_config(ROOT / "training/configs/onmodel_seg_single.yaml")
    assert dual.network == single.network == "onmodel_seg"
    assert dual.model.dual is True and single.model.dual is False
    skip = {"dual", "cross_skip", "still_widths"}
    assert dual.model.model_dump(exclude=skip) == single.model.model_dump(exclude=skip)
    assert dual.schedule == single.schedule and dual.loss == single.loss and ds_dual == ds_single
    assert (dual.metric, dual.metric_mode) == (single.metric, single.metric_mode) == ("iou", "max")
    assert "onmodel_seg" in RESEARCH_NETWORKS and "onmodel_seg" not in NETWORKS
    assert "onmodel_seg" not in (ROOT / "Makefile").read_text(), "make must not train or export onmodel_seg"


def test_dataset_shows_the_still_of_the_worn_garment(tiny_data):
    """Each photo comes with the still of the garment it shows: the worn garment's mean colour is closer to its
    own still's than to the pair partner's (same person, other garment; rendered in another colour)."""
    ds = NetworkDataset(str(tiny_data), "train", "onmodel_seg")
    partner = {p: c for p, c, _ in ds.pairs if p != c}
    closer = 0
    for i, sid in enumerate(ds.ids):
        item = ds[i]
        assert set(item) == {"on_model", "still", "mask"}
        assert item["on_model"].shape == item["still"].shape == (3, H, W) and item["mask"].shape == (1, H, W)
        mask = item["mask"][0] > 0.5
        assert 0.02 < mask.float().mean() < 0.6, f"{sid}: implausible garment mask"
        worn = item["on_model"][:, mask].mean(1)
        own = ds.samples[sid]
        oth = ds.samples[partner[sid]]
        d_own = np.linalg.norm(worn.numpy() * 255 - own["cloth"][own["cloth_mask"] > 127].mean(0))
        d_oth = np.linalg.norm(worn.numpy() * 255 - oth["cloth"][oth["cloth_mask"] > 127].mean(0))
        closer += d_own < d_oth
    assert closer >= 0.75 * len(ds.ids), f"only {closer}/{len(ds.ids)} photos match their own still"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """60 steps of the dual (+skip) variant through train_onmodel_seg.py -> drape_train.train (DeepSpeed engine,
    gloo, one rank: the environment the launcher would set; test_training covers the launcher itself)."""
    tmp = tmp_path_factory.mktemp("onmodel_train")
    cfg = tmp / "onmodel_seg.yaml"
    cfg.write_text(
        "network: onmodel_seg\ndeepspeed: onmodel_seg.ds.json\nmetric: iou\n"
        f"model: {{widths: {WIDTHS}, stem_stride: 2, heads: 2, dual: true, cross_skip: true}}\n"
        f"data: {{height: {H}, width: {W}}}\n"
        "schedule: {batch_size: 4, lr: 0.005, val_every: 20, seed: 0}\n")
    (tmp / "onmodel_seg.ds.json").write_text((ROOT / "training/configs/onmodel_seg.ds.json").read_text())
    cmd = [sys.executable, str(ROOT / "training/train_onmodel_seg.py"), "--config", str(cfg), "--data",
           str(tiny_data), "--out", str(tmp / "ckpt"), "--steps", "60", "--threads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp / "ckpt" / "onmodel_seg"


@pytest.mark.slow
def test_real_training_path_reduces_the_loss(trained):
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert len(losses) == 6, losses                       # logged every 10 of 60 steps
    assert np.mean(losses[-2:]) < 0.9 * losses[0], f"loss did not go down: {losses}"
    card = json.loads((trained / "card.json").read_text())
    assert [s["name"] for s in card["inputs"]] == ["on_model", "still"]
    assert card["outputs"] == [{"name": "mask_logits", "dtype": "float32", "shape": [1, H, W]}]
    assert card["config"]["model"]["dual"] is True and 0.0 <= card["metrics"]["iou"] <= 1.0
    assert {"iou", "dice", "precision", "recall"} <= set(card["metrics"])


@pytest.mark.slow
def test_trained_dual_model_depends_on_the_still(trained, tiny_data):
    """After training, the still of the other garment (same person) moves the logits visibly."""
    from drape_train.evaluate import load_objective

    net = load_objective(trained).net
    ds = NetworkDataset(str(tiny_data), "val", "onmodel_seg")
    partner = {p: c for p, c, _ in ds.pairs if p != c}
    item = ds[0]
    other = NetworkDataset(str(tiny_data), "val", "onmodel_seg")[ds.ids.index(partner[ds.ids[0]])]["still"]
    with torch.no_grad():
        own = net(item["on_model"][None], item["still"][None])
        swapped = net(item["on_model"][None], other[None])
    assert (own - swapped).abs().max() > 1e-2


@pytest.mark.parametrize("dual,cross_skip", VARIANTS)
def test_onnx_export_uses_only_allow_listed_ops(dual, cross_skip, tmp_path):
    import onnx
    import onnxruntime as ort

    net = tiny_net(dual, cross_skip)
    names = list(net.input_names)
    path = tmp_path / "onmodel_seg.onnx"
    torch.onnx.export(net, tuple(inputs(net)), str(path), dynamo=False, opset_version=17, input_names=names,
                      output_names=list(net.output_names),
                      dynamic_axes={n: {0: "batch"} for n in names + list(net.output_names)})
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == names
    ops = {n.op_type for n in model.graph.node}
    assert ops <= TRT_OPS, f"ops outside the TensorRT allow-list: {sorted(ops - TRT_OPS)}"
    xs = inputs(net, batch=3, seed=1)                      # a batch size the graph was not traced with
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {n: x.numpy() for n, x in zip(names, xs)})
    with torch.no_grad():
        ref = net(*xs).numpy()
    assert np.abs(got - ref).max() <= 1e-3


@pytest.mark.slow
def test_drape_export_exports_the_trained_checkpoint(trained, tmp_path):
    """The project's exporter (onnxsim, parity on random and rendered samples, FP16 twin) on the trained network."""
    from drape_export.onnx_export import PARITY_TOL, export_network

    card = export_network(trained, tmp_path / "onmodel_seg")
    o = card["onnx"]
    assert set(o["ops"]) <= TRT_OPS, f"ops outside the TensorRT allow-list: {sorted(set(o['ops']) - TRT_OPS)}"
    assert o["parity_max_abs_diff"] <= PARITY_TOL and o["parity_real"]["samples"] >= 2
    assert (tmp_path / "onmodel_seg" / "model.onnx").is_file() and (tmp_path / "onmodel_seg" / "model.fp16.onnx").is_file()


@pytest.mark.slow
def test_evaluate_reports_the_onmodel_row(trained, tiny_data, tmp_path):
    """`python -m drape_train.evaluate --networks onmodel_seg`: the row, its metrics and the other-still probe."""
    from drape_train.evaluate import main

    out = tmp_path / "report.json"
    rc = main(["--networks", "onmodel_seg", "--data", str(tiny_data), "--split", "val", "--onmodel", str(trained),
               "--parsing", str(tmp_path / "none"), "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert rc == (0 if row["model"]["iou"] >= 0.90 else 1)      # the bar decides the exit status
    assert row["network"] == "onmodel_seg" and row["variant"] == "dual+skip" and row["n"] == 4
    assert {"iou", "dice", "precision", "recall", "iou_other_still"} <= set(row["model"])
    assert row["baseline"] == {} and row["baseline_name"] is None    # no human_parsing checkpoint given


def test_paired_bootstrap():
    from drape_train.evaluate import paired_bootstrap

    a = np.linspace(0.5, 1.0, 50)
    same = paired_bootstrap(a, a)
    assert same["mean"] == 0 and same["ci95"] == [0, 0] and same["n"] == 50
    shifted = paired_bootstrap(a + 0.1, a)
    assert shifted["mean"] == pytest.approx(0.1) and shifted["ci95"] == pytest.approx([0.1, 0.1])
    noisy = paired_bootstrap(a + np.random.default_rng(0).normal(0.02, 0.05, 50), a)
    assert noisy["ci95"][0] < noisy["mean"] < noisy["ci95"][1]
