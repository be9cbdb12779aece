"""Checkpoint -> ONNX (opset 17, dynamic batch axis), simplified, checked, and an FP16 twin for TensorRT.

Reads <checkpoints>/<network>/{weights.pt,card.json} as written by training and writes
<out>/<network>/{model.onnx, model.fp16.onnx, card.json}:

* ``model.onnx`` — FP32, simplified with onnxsim (constant folding + shape inference + dead-node removal), checked
  with ``onnx.checker`` (full check) and compared with PyTorch under ONNX Runtime on random inputs AND on real
  samples rendered by the training data pipeline at the card's resolution, output by output: max abs diff
  <= 1e-3 for both; outputs grid_sample resamples (the GMM's warp) <= 1e-3 at the 99.9th percentile and <= 1e-2
  at worst (``parity_tolerance``; the card's ``parity_outputs`` records each).
* ``model.fp16.onnx`` — the same graph with FP16 weights and activations and FP32 I/O (Cast nodes at the
  boundary), so Triton configs do not change between the CPU (FP32 ONNX) and GPU (FP16 TensorRT) targets.
  TensorRT builds it as a strongly-typed network (the only mode TensorRT 11 has). Its difference from FP32 on the
  real samples and the ONNX Runtime CPU latency of both are measured and recorded in the card.

The card gains an "onnx" section with everything measured here.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from drape_core.card import ModelCard, TensorSpec, read_card
from drape_train.config import TrainConfig
from drape_train.models import NETWORKS

OPSET = 17
PARITY_TOL = 1e-3
# Outputs that grid_sample resamples (a network's ``resampled_outputs``: the GMM's warp). ONNX Runtime and PyTorch
# compute the sampling coordinates in a different float32 order; a coordinate off in its last bits moves a bilinear
# tap across a sharp edge of the garment, so a handful of pixels differ by more than PARITY_TOL with the same warp
# (a quick-schedule GMM on the real samples: 552 of 590k values above 1e-4, the largest 1.1e-3, the 99.9th
# percentile 1e-4; whether the largest lands above 1e-3 changes from one training run to the next). Such outputs
# are held to PARITY_TOL at their 99.9th percentile and to RESAMPLED_MAX_TOL at worst: an export fault in the warp
# (half-pixel shift, align_corners, padding) moves every edge pixel and fails both.
RESAMPLED_MAX_TOL = 1e-2
ONNX_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"
REAL_SAMPLES = 4          # rendered test-split pairs used for the real-sample parity and the FP16 measurement
REAL_SEED = 0             # the dataset seed: the samples are the test split of a `generate --seed 0` dataset
# Ops kept in FP32 inside every FP16 graph (Cast nodes around them), on top of the converter's own block list.
# A network keeps its sampling path too with ``fp16_fp32_sampling`` (the GMM; see ``sampling_path``).
FP16_KEEP_FP32: tuple[str, ...] = ()
# Where the backward walk of ``sampling_path`` stops: learned layers, and products of two activations (the GMM's
# feature correlation). Their outputs feed the sampling coordinates but are not themselves coordinate arithmetic.
SAMPLING_PATH_STOP = frozenset({"Conv", "ConvTranspose", "Gemm", "BatchNormalization", "InstanceNormalization"})


@dataclass(frozen=True)
class DiffStats:
    """How far one set of outputs is from a reference: max, mean and 99.9th percentile of |a - b| over all outputs."""

    max_abs: float
    mean_abs: float
    p999_abs: float

    @classmethod
    def of(cls, got: list[np.ndarray], ref: list[np.ndarray]) -> "DiffStats":
        if len(got) != len(ref):
            raise ValueError(f"{len(got)} outputs vs {len(ref)} reference outputs")
        diffs = []
        for g, r in zip(got, ref):
            if g.shape != r.shape:
                raise ValueError(f"output shape {list(g.shape)} differs from the reference's {list(r.shape)}")
            diffs.append(np.abs(g.astype(np.float64) - r.astype(np.float64)).ravel())
        d = np.concatenate(diffs)
        if not np.isfinite(d).all():
            return cls(float("inf"), float("inf"), float("inf"))
        return cls(float(d.max()), float(d.mean()), float(np.quantile(d, 0.999)))


def load_network(ckpt_dir: Path) -> tuple[torch.nn.Module, ModelCard]:
    from drape_train.families import family

    card = read_card(ckpt_dir)
    cfg = TrainConfig.model_validate(card.config)
    net = family(cfg.network).build(cfg)     # what training built: the family's builder
    net.load_state_dict(torch.load(ckpt_dir / "weights.pt", map_location="cpu", weights_only=True))
    return net.eval(), card


def sample_inputs(card: ModelCard | dict | list[TensorSpec], batch: int, seed: int) -> list[np.ndarray]:
    """Inputs in the ranges the served graph sees: images in [0,1], logits of a (random) label map.

    Label maps are random regions (labels drawn on a 1/16 grid, blown up) as a parse or a mask has, not per-pixel
    salt and pepper. Fed the latter, the default-schedule GMM regresses its warp from activations far outside
    anything served and ONNX Runtime and PyTorch differ by 1.9e-3 at thousands of warped edge pixels (float32
    rounding; 3e-4 on real samples, 5e-5 on region maps), which failed `make export` after `make train`.
    """
    g = np.random.default_rng(seed)
    out = []

    def regions(c: int, n: int, h: int, w: int) -> np.ndarray:
        coarse = g.integers(0, c, size=(n, -(-h // 16), -(-w // 16)))
        return coarse.repeat(16, axis=1).repeat(16, axis=2)[:, :h, :w]

    for spec in (card if isinstance(card, (list, tuple)) else ModelCard.of(card).inputs):
        shape = [batch, *spec.shape]
        if spec.name.endswith("logits"):
            c = shape[1]
            labels = regions(c, batch, *shape[2:]) if c > 1 else regions(2, batch, *shape[2:])[:, None]
            x = (np.eye(c)[labels].transpose(0, 3, 1, 2) if c > 1 else labels) * 12.0 - (6.0 if c == 1 else 0.0)
        else:
            x = g.random(shape)
        out.append(x.astype(np.float32))
    return out


class RealSamples:
    """Real network inputs: a few test-split pairs rendered by the training data pipeline at one resolution.

    The inputs go through the same per-network dataset views (``drape_train.datasets.NetworkDataset``) and the
    same batch -> network-input mapping (the family's ``inputs``) as training validation, so parity is measured on
    the distribution the networks were trained on, not only on noise.
    """

    def __init__(self, root: Path, height: int, width: int, n: int = REAL_SAMPLES, seed: int = REAL_SEED):
        from drape_train.data.layout import write_dataset

        self.root, self.hw, self.n = Path(root), (height, width), n
        write_dataset(self.root, {"test": n}, seed=seed, height=height, width=width, workers=1, progress=False)

    def inputs(self, card: ModelCard | dict) -> list[np.ndarray]:
        from drape_train.datasets import NetworkDataset
        from drape_train.families import family

        card = ModelCard.of(card)
        if card.hw != self.hw:
            raise ValueError(f"{card.name}: card resolution {card.hw} but the samples were rendered at {self.hw}")
        ds = NetworkDataset(str(self.root), "test", card.name, seed=REAL_SEED)
        items = [ds[i] for i in range(min(self.n, len(ds)))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        xs = family(card.name).inputs(batch, card.input_names)   # the training mapping batch -> network inputs
        return [x.numpy().astype(np.float32) for x in xs]


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """onnxsim: constant folding, shape inference and dead-node removal, checked by onnxsim on random inputs."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified graph against the original")
    return simplified, f"onnxsim {onnxsim.__version__.lstrip('v')}"


def toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` topologically in place (the FP16 converter appends its boundary Casts at the end)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({n for node in rest for n in node.input if n not in known})
            raise ValueError(f"graph is not a DAG or reads undefined tensors: {missing[:5]}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def sampling_path(graph: onnx.GraphProto, ops: tuple[str, ...]) -> list[str]:
    """Names of the nodes of type ``ops`` and of every node their coordinate inputs are computed from.

    For a sampling op (GridSample: input 0 is the image, input 1 the grid) the walk goes back from every input but
    the first, through the producers, and stops at ``SAMPLING_PATH_STOP`` layers and at a MatMul of two
    activations; a MatMul with a constant operand (the GMM's TPS kernel times its control points) is coordinate
    arithmetic and stays in the path. In FP16 (11-bit mantissa) a grid coordinate near 1 is off by up to 4.9e-4,
    a twentieth of a pixel at 192 px and a fifth at 768 px, enough to move the warp's sharp garment edges;
    in FP32 the same path costs a few Casts. Unnamed nodes are named here (the converter blocks nodes by name).
    """
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {}
    for k, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
        for out in node.output:
            producer[out] = node
    keep, stack = set(), []
    for node in graph.node:
        if node.op_type in ops:
            keep.add(node.name)
            stack.extend(node.input[1:])
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep or node.op_type in SAMPLING_PATH_STOP:
            continue
        if node.op_type == "MatMul" and not any(i in consts for i in node.input):
            continue
        keep.add(node.name)
        stack.extend(i for i in node.input if i not in consts)
    return sorted(keep)


def join_fp32_islands(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """Let blocked (FP32) nodes feed each other in FP32, in place.

    The converter wraps every blocked node on its own: Casts to FP32 on its inputs, to FP16 on its outputs. Two
    blocked neighbours then still exchange an FP16 tensor (FP32 -> Cast FP16 -> Cast FP32), and a constant only
    blocked nodes read (the TPS kernel) is stored in FP16 and cast back: the "FP32" path rounds to FP16 at every
    step. Here each FP32 -> FP16 -> FP32 Cast pair is bypassed, each FP16 constant cast back to FP32 is replaced
    by its FP32 original, and Casts and constants left unread are removed.
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    to = {n.name: next((a.i for a in n.attribute if a.name == "to"), None) for n in graph.node if n.op_type == "Cast"}
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    originals = {i.name: i for i in original.initializer if i.data_type == f32}
    for n in original.node:      # Constant nodes (the TPS kernel is one) count as constants too
        value = next((a.t for a in n.attribute if a.name == "value"), None) if n.op_type == "Constant" else None
        if value is not None and value.data_type == f32:
            originals[n.output[0]] = value
    constants = set(inits) | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    fp32_tensors = {i.name for i in graph.input if i.type.tensor_type.elem_type == f32}
    for node in graph.node:    # outputs of blocked nodes feeding a Cast to FP16 are FP32
        if node.op_type == "Cast" and to[node.name] == f16 and node.input[0] in producer:
            fp32_tensors.add(node.input[0])
    rename, restored = {}, {}
    for node in graph.node:
        if node.op_type != "Cast" or to[node.name] != f32:
            continue
        src = node.input[0]
        up = producer.get(src)
        if up is not None and up.op_type == "Cast" and to[up.name] == f16 and up.input[0] in fp32_tensors:
            rename[node.output[0]] = up.input[0]
        elif src in constants and src in originals:
            restored[src] = originals[src]
            rename[node.output[0]] = f"{src}__fp32"
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    for src, init in restored.items():
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = f"{src}__fp32"
        graph.initializer.append(copy)
    while True:   # drop what nothing reads any more
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("Cast", "Constant") and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    unused = [i for i in graph.initializer if i.name not in read]
    for i in unused:
        graph.initializer.remove(i)


def to_fp16(model: onnx.ModelProto, keep_fp32: tuple[str, ...] = FP16_KEEP_FP32,
            keep_nodes: tuple[str, ...] | list[str] = ()) -> onnx.ModelProto:
    """FP16 weights/activations with FP32 graph I/O (Cast at the boundary) for a strongly-typed TensorRT build.

    ``keep_fp32`` op types and the nodes named in ``keep_nodes`` (a ``sampling_path``) stay FP32: the converter
    puts Casts around them. Uses ONNX Runtime's converter (``onnxruntime.transformers.float16``, the maintained
    copy of onnxconverter-common's) so no extra dependency is needed.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=False,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32), node_block_list=list(keep_nodes),
    )
    if keep_nodes:
        join_fp32_islands(converted.graph, model.graph)
    toposort(converted.graph)
    onnx.checker.check_model(converted, full_check=True)
    return converted


def ort_session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the FP16 graph logs one warning per inserted CPU Cast otherwise
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_run(session: ort.InferenceSession, card: ModelCard | dict, xs: list[np.ndarray]) -> list[np.ndarray]:
    return session.run(None, dict(zip(ModelCard.of(card).input_names, xs)))


def torch_run(net: torch.nn.Module, xs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        ref = net(*[torch.from_numpy(x) for x in xs])
    return [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]


def ort_latency_ms(session: ort.InferenceSession, card: ModelCard, xs: list[np.ndarray], repeats: int = 3) -> float:
    """Median wall time of one ``run`` (after one warm-up run)."""
    ort_run(session, card, xs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ort_run(session, card, xs)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def output_diffs(names: list[str], got: list[np.ndarray], ref: list[np.ndarray]) -> dict[str, DiffStats]:
    """``DiffStats`` per named output."""
    if not len(names) == len(got) == len(ref):
        raise ValueError(f"{len(names)} names, {len(got)} outputs, {len(ref)} reference outputs")
    return {n: DiffStats.of([g], [r]) for n, g, r in zip(names, got, ref)}


def parity_tolerance(name: str, resampled: tuple[str, ...]) -> dict:
    """What output ``name`` must meet: ``max_abs`` and, for a resampled output, ``p999_abs`` (else None)."""
    if name in resampled:
        return {"max_abs": RESAMPLED_MAX_TOL, "p999_abs": PARITY_TOL}
    return {"max_abs": PARITY_TOL, "p999_abs": None}


def parity_failures(diffs: dict[str, DiffStats], resampled: tuple[str, ...]) -> list[str]:
    """One line per output outside its ``parity_tolerance``; empty when all agree."""
    failures = []
    for name, d in diffs.items():
        tol = parity_tolerance(name, resampled)
        if not d.max_abs <= tol["max_abs"]:
            failures.append(f"{name} max {d.max_abs:.2e} > {tol['max_abs']:g}")
        if tol["p999_abs"] is not None and not d.p999_abs <= tol["p999_abs"]:
            failures.append(f"{name} p99.9 {d.p999_abs:.2e} > {tol['p999_abs']:g}")
    return failures


def parity(net: torch.nn.Module, onnx_path: str, card: ModelCard, batch: int = 3) -> dict[str, DiffStats]:
    """PyTorch against ONNX Runtime per output on random inputs, at a batch size not exported with."""
    xs = sample_inputs(card, batch, seed=1)
    return output_diffs(list(net.output_names), ort_run(ort_session(onnx_path), card, xs), torch_run(net, xs))


def export_network(ckpt_dir: Path, out_dir: Path, opset: int = OPSET, samples: RealSamples | None = None) -> dict:
    """Export one network; see the module docstring. ``samples`` defaults to freshly rendered real samples."""
    net, card = load_network(ckpt_dir)
    names_in, names_out = list(net.input_names), list(net.output_names)
    assert names_in == card.input_names, f"{ckpt_dir}: card inputs disagree with the network"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".model.onnx.tmp{os.getpid()}"
    tmp16 = out_dir / f".model.fp16.onnx.tmp{os.getpid()}"
    try:
        example = tuple(torch.from_numpy(x) for x in sample_inputs(card, 2, seed=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, example, str(tmp), dynamo=False, opset_version=opset, input_names=names_in,
                              output_names=names_out, dynamic_axes={n: {0: "batch"} for n in names_in + names_out})
        raw = onnx.load(str(tmp))
        model, simplifier = simplify(raw)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))

        random_diffs = parity(net, str(tmp), card)
        if samples is None:
            with tempfile.TemporaryDirectory(prefix="drape-real-") as root:
                xs_real = RealSamples(Path(root), *card.hw).inputs(card)
        else:
            xs_real = samples.inputs(card)
        fp32 = ort_session(tmp)
        got32 = ort_run(fp32, card, xs_real)
        ref32 = torch_run(net, xs_real)
        real, real_diffs = DiffStats.of(got32, ref32), output_diffs(names_out, got32, ref32)
        resampled = tuple(getattr(net, "resampled_outputs", ()))
        failures = ([f"random inputs: {f}" for f in parity_failures(random_diffs, resampled)]
                    + [f"real samples: {f}" for f in parity_failures(real_diffs, resampled)])
        if failures:
            raise RuntimeError(f"{card.name}: ONNX Runtime differs from PyTorch: " + "; ".join(failures))
        random_diff = max(d.max_abs for d in random_diffs.values())

        sampling_ops = tuple(getattr(net, "fp16_fp32_sampling", ()))
        fp32_nodes = sampling_path(model.graph, sampling_ops) if sampling_ops else []
        kept = set(fp32_nodes)
        model16 = to_fp16(model, keep_nodes=fp32_nodes)
        onnx.save(model16, str(tmp16))
        fp16 = ort_session(tmp16)
        fp16_diff = DiffStats.of(ort_run(fp16, card, xs_real), got32)
        one = [x[:1] for x in xs_real]
        latency = {"fp32": ort_latency_ms(fp32, card, one), "fp16": ort_latency_ms(fp16, card, one)}
        os.replace(tmp, out_dir / ONNX_FILE)
        os.replace(tmp16, out_dir / FP16_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        tmp16.unlink(missing_ok=True)

    card = card.with_section("onnx", {
        "opset": opset, "onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
        "simplifier": simplifier, "nodes_exported": len(raw.graph.node), "nodes": len(model.graph.node),
        "parity_max_abs_diff": max(random_diff, real.max_abs),
        "parity_random_max_abs_diff": random_diff,
        "parity_real": {"samples": len(xs_real[0]), **asdict(real)},
        "parity_outputs": {n: {"tolerance": parity_tolerance(n, resampled), "random": asdict(random_diffs[n]),
                               "real": asdict(real_diffs[n])} for n in names_out},
        "ops": sorted({n.op_type for n in model.graph.node}),
        "fp16": {
            "file": FP16_FILE, "io": "float32 (Cast at the graph boundary)", "keep_fp32_ops": list(FP16_KEEP_FP32),
            "fp32_sampling_path": {"ops": list(sampling_ops), "nodes": len(fp32_nodes),
                                   "op_types": sorted({n.op_type for n in model.graph.node if n.name in kept})},
            "vs_fp32_on_real": asdict(fp16_diff),
            "ort_cpu_ms_batch1": latency,
        },
    })
    card.write(out_dir)
    return card.dump()


def export_all(checkpoints: Path, out: Path, networks=NETWORKS) -> list[dict]:
    """Export ``networks``; real samples are rendered once per resolution and shared."""
    cards = []
    with tempfile.TemporaryDirectory(prefix="drape-real-") as root:
        samples: dict[tuple[int, int], RealSamples] = {}
        for name in networks:
            ckpt = checkpoints / name
            if not (ckpt / "weights.pt").exists():
                raise FileNotFoundError(f"{ckpt}/weights.pt missing: train {name} first (make train)")
            hw = read_card(ckpt).hw
            if hw not in samples:
                samples[hw] = RealSamples(Path(root) / f"{hw[0]}x{hw[1]}", *hw)
            cards.append(export_network(ckpt, out / name, samples=samples[hw]))
    return cards
