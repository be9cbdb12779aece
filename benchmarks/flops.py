"""Count a network's multiply-accumulates by walking its ONNX graph: Conv, ConvTranspose, MatMul and Gemm.

Method: fix every dynamic input dimension (the batch axis) to 1, run ONNX shape inference with data propagation
so every intermediate tensor gets a static shape, then for each node

* Conv          MACs = N * C_out * prod(out spatial) * (C_in / group) * prod(kernel)
* ConvTranspose MACs = N * C_in * prod(in spatial) * (C_out / group) * prod(kernel)
* MatMul        MACs = prod(broadcast batch dims) * M * K * N
* Gemm          MACs = M * K * N

FLOPs = 2 * MACs. Everything else (element-wise ops, Softmax, Resize, GridSample, normalisations) is left out:
for these U-Nets it is a few percent of the arithmetic and none of it runs on the GEMM units whose peak we
compare against. Nodes whose shapes inference could not resolve are reported, never silently counted as 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GraphFlops", "count_macs"]


@dataclass
class GraphFlops:
    macs: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # node names whose shapes were unknown

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _fix_batch(model, batch: int) -> None:
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch


def _shapes(model) -> dict[str, tuple[int, ...] | None]:
    shapes: dict[str, tuple[int, ...] | None] = {}
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims) and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
        else:
            shapes.setdefault(value.name, None)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            if a.type == a.INT:
                return a.i
            if a.type == a.INTS:
                return list(a.ints)
    return default


def count_macs(model_or_path, batch: int = 1) -> GraphFlops:
    """MACs of one forward pass at ``batch`` (see the module docstring for what is counted)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's graph
    _fix_batch(model, batch)
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    out = GraphFlops()

    def add(op: str, macs: int) -> None:
        out.macs += int(macs)
        out.by_op[op] = out.by_op.get(op, 0) + int(macs)

    for node in model.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        ins = [shapes.get(n) for n in node.input]
        outs = [shapes.get(n) for n in node.output]
        if any(s is None for s in ins[:2]) or outs[0] is None:
            out.unresolved.append(node.name or op)
            continue
        if op == "Conv":
            w, y = ins[1], outs[0]
            add(op, y[0] * y[1] * int(np.prod(y[2:])) * w[1] * int(np.prod(w[2:])))
        elif op == "ConvTranspose":
            x, w = ins[0], ins[1]  # w: [C_in, C_out / group, k...]
            add(op, x[0] * x[1] * int(np.prod(x[2:])) * w[1] * int(np.prod(w[2:])))
        elif op == "MatMul":
            a, b = ins[0], ins[1]
            a2 = a if len(a) > 1 else (1, a[0])
            b2 = b if len(b) > 1 else (b[0], 1)
            batch_dims = np.broadcast_shapes(a2[:-2], b2[:-2])
            add(op, int(np.prod(batch_dims)) * a2[-2] * a2[-1] * b2[-1])
        else:  # Gemm
            a, b = ins[0], ins[1]
            m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
            n = b[0] if _attr(node, "transB", 0) else b[1]
            add(op, m * k * n)
    return out
