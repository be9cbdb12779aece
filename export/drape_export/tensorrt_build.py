"""ONNX -> TensorRT plan: strongly-typed FP16 engines with a batch optimization profile, validated against ORT.

``python -m drape_export trt --onnx-dir build/onnx`` builds ``<onnx-dir>/<network>/model.plan`` for every
exported network and records in its ``card.json`` (section ``"tensorrt"``) the TensorRT version and GPU
architecture the plan is tied to, the profile, and the measured difference from ONNX Runtime FP32.

Written for TensorRT 10.x (>= 10.3) and 11.x:

* Precision comes from the graph, not from builder flags: ``model.fp16.onnx`` (FP16 weights and activations,
  FP32 I/O through Cast nodes, written by ``drape_export onnx``) is parsed into a STRONGLY_TYPED network.
  ``BuilderFlag.FP16`` is never used (TensorRT 11 removed it; on 10.x weak typing is the deprecated path). On
  TensorRT 11 every network is strongly typed and the creation flag is accepted but ignored.
* One optimization profile over the batch axis (min/opt/max from :class:`TrtBuildConfig`); max must cover the
  ``max_batch_size`` Triton is configured with (the card's).
* A timing cache file is loaded before and saved after every build, so rebuilds (and the other networks of the
  same run) reuse measured tactics; a cache from another TensorRT/GPU is ignored with a warning.
* After the build the engine is deserialized and run on real samples at the min/opt/max batch sizes; the
  outputs are compared with ONNX Runtime running the FP32 graph on the same inputs (:func:`validate`).

Everything before ``builder.build_serialized_network`` (config, profiles, graph choice, validation harness,
card records) is plain Python and is exercised on CPU machines; the build itself needs a GPU and the
``tensorrt`` extra (``pip install -e '.[tensorrt]'``).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from drape_core.card import CARD_FILE, MAX_BATCH_SIZE, CardError, ModelCard, read_card
from drape_core.plans import detect_runtime

from .onnx_export import FP16_FILE, ONNX_FILE, DiffStats, RealSamples, ort_run, ort_session

PLAN_FILE = "model.plan"
DEFAULT_CONFIG = Path(__file__).with_name("trt.yaml")

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


class TrtError(RuntimeError):
    """A TensorRT build or validation failed; the message names the network."""


class Tolerance(BaseModel):
    """Accepted difference from ONNX Runtime FP32 (images in [0,1], logits); both bounds must hold."""

    model_config = ConfigDict(extra="forbid")
    mean_abs: float = Field(gt=0)
    p999_abs: float = Field(gt=0)


class TrtBuildConfig(BaseModel):
    """Typed build settings (``export/drape_export/trt.yaml`` holds the defaults; CLI flags override)."""

    model_config = ConfigDict(extra="forbid")
    precision: Literal["fp16", "fp32"] = "fp16"
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(4, ge=1)
    max_batch: int = Field(MAX_BATCH_SIZE, ge=1)   # the cards' max_batch_size, which Triton is configured with
    workspace_mib: int = Field(2048, ge=64)
    builder_optimization_level: int = Field(3, ge=0, le=5)
    timing_cache: Path | None = Path("build/trt/timing.cache")
    tolerance_fp16: Tolerance = Tolerance(mean_abs=1e-2, p999_abs=0.1)
    tolerance_fp32: Tolerance = Tolerance(mean_abs=1e-3, p999_abs=1e-2)  # TF32 convolutions allowed

    @model_validator(mode="after")
    def _ordered(self) -> "TrtBuildConfig":
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                             f"{self.max_batch}")
        return self

    @property
    def tolerance(self) -> Tolerance:
        return self.tolerance_fp16 if self.precision == "fp16" else self.tolerance_fp32

    @property
    def onnx_file(self) -> str:
        return FP16_FILE if self.precision == "fp16" else ONNX_FILE

    @property
    def validation_batches(self) -> tuple[int, ...]:
        return tuple(sorted({self.min_batch, self.opt_batch, self.max_batch}))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "TrtBuildConfig":
        """Read a YAML config (default: the packaged ``trt.yaml``) and apply non-None ``overrides``."""
        path = Path(path) if path is not None else DEFAULT_CONFIG
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise TrtError(f"cannot read TensorRT build config {path}: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


@dataclass(frozen=True)
class BuildPlan:
    """What will be built for one network: everything decided before TensorRT is touched."""

    name: str
    directory: Path
    onnx_path: Path
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    card: ModelCard

    @property
    def plan_path(self) -> Path:
        return self.directory / PLAN_FILE


def profile_shapes(card: ModelCard | dict, cfg: TrtBuildConfig) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input: the card's CHW with the configured batch sizes.

    ``max_batch`` must cover the card's ``max_batch_size``, because the generated Triton config declares that
    batch size and Triton refuses a plan whose profile cannot run it.
    """
    card = ModelCard.of(card)   # a card's shapes are positive: static by construction
    if cfg.max_batch < card.max_batch_size:
        raise TrtError(f"{card.name}: max_batch {cfg.max_batch} is below the card's max_batch_size "
                       f"{card.max_batch_size} that Triton will be configured with")
    shapes = {}
    for spec in card.inputs:
        shapes[spec.name] = tuple((b, *spec.shape) for b in (cfg.min_batch, cfg.opt_batch, cfg.max_batch))
    return shapes


def _check_graph_io(path: Path, card: ModelCard) -> None:
    """The graph must take and return FP32 tensors named as in the card, so the Triton config is unchanged."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    io = [(v.name, v.type.tensor_type.elem_type) for v in model.graph.input if v.name not in inits]
    io += [(v.name, v.type.tensor_type.elem_type) for v in model.graph.output]
    want = set(card.input_names) | set(card.output_names)
    names = {n for n, _ in io}
    if not want <= names:
        raise TrtError(f"{path}: graph I/O {sorted(names)} lacks card tensors {sorted(want - names)}")
    wrong = [n for n, t in io if n in want and t != onnx.TensorProto.FLOAT]
    if wrong:
        raise TrtError(f"{path}: I/O tensors {wrong} are not FP32; the FP16 graph must keep FP32 I/O "
                       "(re-export with `python -m drape_export onnx`)")


def plan_build(directory: str | Path, cfg: TrtBuildConfig) -> BuildPlan:
    """Resolve one ``<onnx-dir>/<network>`` into a :class:`BuildPlan` (CPU only, no TensorRT)."""
    directory = Path(directory)
    try:
        card = read_card(directory / CARD_FILE)
    except CardError as exc:
        raise TrtError(str(exc)) from None
    onnx_path = directory / cfg.onnx_file
    if not onnx_path.is_file():
        raise TrtError(f"{onnx_path} not found: run `python -m drape_export onnx` (it writes {ONNX_FILE} and "
                       f"{FP16_FILE})")
    _check_graph_io(onnx_path, card)
    return BuildPlan(card.name, directory, onnx_path, profile_shapes(card, cfg), card)


# ------------------------------------------------------------------------------------------------ TensorRT


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise TrtError("TensorRT is not installed: on a GPU machine `pip install -e '.[tensorrt]'` (the version "
                       f"must match the serving image's TensorRT) ({exc})") from None
    return tensorrt


def network_flags(trt) -> int:
    """STRONGLY_TYPED where the flag exists (10.x: required for graph-defined precision; 11.x: the default)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _load_timing_cache(trt, config, path: Path | None, logger_log: Callable[[str], None]):
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        logger_log(f"timing cache {path} is from another TensorRT/GPU; starting a fresh one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    os.replace(tmp, path)


def build_engine(plan: BuildPlan, cfg: TrtBuildConfig) -> bytes:
    """Parse the ONNX graph into a strongly-typed network and build the serialized engine."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtError(f"{plan.name}: TensorRT cannot parse {plan.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.builder_optimization_level
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    _load_timing_cache(trt, config, cfg.timing_cache, lambda m: print(f"drape-export trt: {plan.name}: {m}"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtError(f"{plan.name}: TensorRT failed to build an engine from {plan.onnx_path} (see its log above)")
    _save_timing_cache(config, cfg.timing_cache)
    return bytes(memoryview(serialized))


class TrtRunner:
    """Runs a serialized engine on numpy inputs (device buffers via torch CUDA tensors)."""

    def __init__(self, engine_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str]):
        import torch

        trt = _import_tensorrt()
        self._torch, self._trt = torch, trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise TrtError("TensorRT could not deserialize the engine it just built")
        self.context = self.engine.create_execution_context()
        self.input_names, self.output_names = list(input_names), list(output_names)

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        torch, trt = self._torch, self._trt
        keep = []
        for name, x in zip(self.input_names, xs):
            t = torch.from_numpy(np.ascontiguousarray(x)).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            out = torch.empty(shape, dtype=dtype, device="cuda")
            outs.append(out)
            self.context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise TrtError("TensorRT execution failed")
        stream.synchronize()
        return [o.float().cpu().numpy() for o in outs]


# ---------------------------------------------------------------------------------------------- validation


def batch_of(xs: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Tile/crop the samples to exactly ``batch`` items (the same items across inputs)."""
    n = xs[0].shape[0]
    idx = np.arange(batch) % n
    return [np.ascontiguousarray(x[idx]) for x in xs]


def validate(candidate: Runner, reference_onnx: Path, card: ModelCard | dict, samples: list[np.ndarray],
             batches: Sequence[int], tolerance: Tolerance) -> dict[str, dict]:
    """Run ``candidate`` and ONNX Runtime (FP32 graph) on the same inputs at each batch size and compare.

    Returns ``{batch: DiffStats as dict}``; raises :class:`TrtError` naming the network and the batch size when
    a bound is exceeded. The candidate is the TensorRT engine in ``trt`` builds; the harness itself is runner-
    agnostic (the CPU tests validate the FP16 ONNX graph under ONNX Runtime with it).
    """
    card = ModelCard.of(card)
    session = ort_session(reference_onnx)
    results = {}
    for b in batches:
        xs = batch_of(samples, b)
        stats = DiffStats.of(candidate(xs), ort_run(session, card, xs))
        results[str(b)] = asdict(stats)
        if not (stats.mean_abs <= tolerance.mean_abs and stats.p999_abs <= tolerance.p999_abs):
            raise TrtError(f"{card.name}: at batch {b} the engine differs from ONNX Runtime FP32 by "
                           f"mean {stats.mean_abs:.2e} / p99.9 {stats.p999_abs:.2e} (max {stats.max_abs:.2e}); "
                           f"allowed mean {tolerance.mean_abs:g} / p99.9 {tolerance.p999_abs:g}")
    return results


def tensorrt_record(trt_version: str, compute_capability: str, gpu_name: str, cfg: TrtBuildConfig, plan: BuildPlan,
                    engine: bytes, validation: dict, build_s: float) -> dict:
    """The card's ``"tensorrt"`` section; ``version`` and ``compute_capability`` are what plan_check compares."""
    return {
        "version": trt_version,
        "compute_capability": compute_capability,
        "gpu_name": gpu_name,
        "precision": cfg.precision,
        "strongly_typed": True,
        "onnx": plan.onnx_path.name,
        "profile": {"min_batch": cfg.min_batch, "opt_batch": cfg.opt_batch, "max_batch": cfg.max_batch},
        "workspace_mib": cfg.workspace_mib,
        "builder_optimization_level": cfg.builder_optimization_level,
        "timing_cache": str(cfg.timing_cache) if cfg.timing_cache else None,
        "plan_file": PLAN_FILE,
        "plan_sha256": hashlib.sha256(engine).hexdigest(),
        "plan_bytes": len(engine),
        "build_s": round(build_s, 1),
        "validation_vs_ort_fp32": validation,
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_network(plan: BuildPlan, cfg: TrtBuildConfig, samples: RealSamples) -> dict:
    """Build, validate and record one plan; the plan and card are written only if validation passes."""
    import torch

    _import_tensorrt()
    if not torch.cuda.is_available():
        raise TrtError(f"{plan.name}: no CUDA GPU visible; TensorRT plans are built on the serving GPU type")
    t0 = time.perf_counter()
    engine = build_engine(plan, cfg)
    build_s = time.perf_counter() - t0
    card = plan.card
    runner = TrtRunner(engine, card.input_names, card.output_names)
    validation = validate(runner, plan.directory / ONNX_FILE, card, samples.inputs(card), cfg.validation_batches,
                          cfg.tolerance)
    runtime = detect_runtime()
    major, minor = torch.cuda.get_device_capability()
    record = tensorrt_record(_import_tensorrt().__version__, runtime.compute_capability or f"{major}.{minor}",
                             runtime.gpu_name or torch.cuda.get_device_name(), cfg, plan, engine, validation, build_s)
    _write_atomic(plan.plan_path, engine)
    card = card.with_section("tensorrt", record)
    _write_atomic(plan.directory / CARD_FILE, card.to_json().encode())
    return card.dump()
