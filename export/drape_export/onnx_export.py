"""Checkpoint -> ONNX (opset 17, dynamic batch axis), checked with onnx.checker and against PyTorch with ORT.

Reads <checkpoints>/<network>/{weights.pt,card.json} as written by training and writes
<out>/<network>/{model.onnx,card.json}; the card gains an "onnx" section with the opset and the measured parity.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from drape_train.config import TrainConfig
from drape_train.models import NETWORKS, build

OPSET = 17
PARITY_TOL = 1e-3


def load_network(ckpt_dir: Path) -> tuple[torch.nn.Module, dict]:
    card = json.loads((ckpt_dir / "card.json").read_text())
    cfg = TrainConfig.model_validate(card["config"])
    net = build(cfg.network, cfg.model.widths, cfg.data.height, cfg.data.width, **cfg.model_kwargs)
    net.load_state_dict(torch.load(ckpt_dir / "weights.pt", map_location="cpu", weights_only=True))
    return net.eval(), card


def sample_inputs(card: dict, batch: int, seed: int) -> list[np.ndarray]:
    """Inputs in the ranges the served graph sees: images in [0,1], logits of a (random) label map."""
    g = np.random.default_rng(seed)
    out = []
    for spec in card["inputs"]:
        shape = [batch, *spec["shape"]]
        if spec["name"].endswith("logits"):
            c = shape[1]
            labels = g.integers(0, c, size=(batch, *shape[2:])) if c > 1 else g.integers(0, 2, size=shape)
            x = (np.eye(c)[labels].transpose(0, 3, 1, 2) if c > 1 else labels) * 12.0 - (6.0 if c == 1 else 0.0)
        else:
            x = g.random(shape)
        out.append(x.astype(np.float32))
    return out


def export_network(ckpt_dir: Path, out_dir: Path, opset: int = OPSET) -> dict:
    net, card = load_network(ckpt_dir)
    names_in, names_out = list(net.input_names), list(net.output_names)
    assert names_in == [s["name"] for s in card["inputs"]], f"{ckpt_dir}: card inputs disagree with the network"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".model.onnx.tmp{os.getpid()}"
    example = tuple(torch.from_numpy(x) for x in sample_inputs(card, 2, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(tmp), dynamo=False, opset_version=opset, input_names=names_in,
                          output_names=names_out, dynamic_axes={n: {0: "batch"} for n in names_in + names_out})
    model = onnx.load(str(tmp))
    onnx.checker.check_model(model, full_check=True)
    diff = parity(net, str(tmp), card)
    if diff > PARITY_TOL:
        tmp.unlink()
        raise RuntimeError(f"{card['name']}: ONNX Runtime differs from PyTorch by {diff:.2e} > {PARITY_TOL}")
    os.replace(tmp, out_dir / "model.onnx")
    card = {**card, "onnx": {"opset": opset, "parity_max_abs_diff": diff, "onnxruntime": ort.__version__,
                             "torch": torch.__version__, "ops": sorted({n.op_type for n in model.graph.node})}}
    (out_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card


def parity(net: torch.nn.Module, onnx_path: str, card: dict, batch: int = 3) -> float:
    """Max abs difference between PyTorch and ONNX Runtime over all outputs, at a batch size not exported with."""
    xs = sample_inputs(card, batch, seed=1)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {s["name"]: x for s, x in zip(card["inputs"], xs)})
    with torch.no_grad():
        ref = net(*[torch.from_numpy(x) for x in xs])
    ref = ref if isinstance(ref, tuple) else (ref,)
    return max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))


def export_all(checkpoints: Path, out: Path, networks=NETWORKS) -> list[dict]:
    cards = []
    for name in networks:
        ckpt = checkpoints / name
        if not (ckpt / "weights.pt").exists():
            raise FileNotFoundError(f"{ckpt}/weights.pt missing: train {name} first (make train)")
        cards.append(export_network(ckpt, out / name))
    return cards
