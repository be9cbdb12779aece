"""An ensemble run in this process the way Triton runs it: its steps read from the repository's config.pbtxt.

``Pipeline`` walks an ensemble's ``ensemble_scheduling`` steps one request at a time, calling the serving
pre/post code (``drape_runtime.prepost``, laid out from the pre/post models' own configs) and a network callable
per network step; ``ort_networks`` gives those callables as the serving runner on the repository's model.onnx and
config. The in-process reference (``reference.ReferencePipeline``) and the side-by-side benchmark
(benchmarks/pipelines.py, which also plugs in eager PyTorch networks) both run through it, so the ensemble wiring
is read from one place: the pbtxt.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from drape_core import contract
from drape_runtime.model_config import ModelConfig
from drape_runtime.prepost import PreprocessLayout, RecolorPostLayout, TryonPostLayout, preprocess_pair

__all__ = ["Network", "Pipeline", "Step", "ensemble_models", "load_config", "ort_networks", "version_dir"]

Network = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def load_config(path: Path) -> dict:
    """A config.pbtxt as the JSON dict Triton hands python models (protobuf text -> dict)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    msg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def version_dir(model_dir: Path) -> Path:
    """The newest numeric version directory of a model (what Triton's latest-version policy serves)."""
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no version directory")
    return max(versions, key=lambda p: int(p.name))


def ensemble_models(repo: Path, spec: contract.EnsembleSpec) -> list[str]:
    return [spec.name] + [s["model_name"] for s in load_config(repo / spec.name / "config.pbtxt")
                          ["ensemble_scheduling"]["step"]]


@dataclass(frozen=True)
class Step:
    model: str
    inputs: dict[str, str]   # model tensor -> ensemble tensor
    outputs: dict[str, str]


class Pipeline:
    """An ensemble's steps run in this process, one request at a time; times every step."""

    def __init__(self, repo: Path, spec: contract.EnsembleSpec, networks: dict[str, Network]):
        cfg = load_config(repo / spec.name / "config.pbtxt")
        self.spec = spec
        self.steps = [Step(s["model_name"], dict(s.get("input_map", {})), dict(s.get("output_map", {})))
                      for s in cfg["ensemble_scheduling"]["step"]]
        self.pre = PreprocessLayout.from_config(ModelConfig.from_json(
            load_config(repo / spec.preprocess_model / "config.pbtxt")))
        post_cls = TryonPostLayout if spec is contract.TRYON else RecolorPostLayout
        self.post = post_cls.from_config(ModelConfig.from_json(
            load_config(repo / spec.postprocess_model / "config.pbtxt")))
        self.networks = networks
        self.step_s: dict[str, float] = defaultdict(float)
        missing = [s.model for s in self.steps
                   if s.model not in (spec.preprocess_model, spec.postprocess_model) and s.model not in networks]
        if missing:
            raise ValueError(f"{spec.name}: no network for steps {missing}")

    def __call__(self, encoded: tuple[bytes, bytes]) -> tuple[np.ndarray, ...]:
        t = {n: np.frombuffer(b, dtype=np.uint8)[None, :] for n, b in zip(self.spec.input_names, encoded)}
        for step in self.steps:
            t0 = time.perf_counter()
            feeds = {k: t[v] for k, v in step.inputs.items()}
            if step.model == self.spec.preprocess_model:
                outs = preprocess_pair(feeds[self.pre.input_a], feeds[self.pre.input_b], self.pre)
            elif step.model == self.spec.postprocess_model:
                outs = self.post.run(feeds)
            else:
                outs = self.networks[step.model](feeds)
            for k, v in step.outputs.items():
                t[v] = outs[k]
            self.step_s[step.model] += time.perf_counter() - t0
        return tuple(t[o][0] for o in self.spec.output_names)


def ort_networks(repo: Path, threads: int | None = None, spinning: bool | None = None) -> dict[str, Network]:
    """Each network as the serving runner on the repository's own model.onnx and config.

    ``threads`` overrides the config's ``intra_op_num_threads``; ``spinning`` (when not None) rebuilds the runner's
    session with ONNX Runtime's ``session.intra_op.allow_spinning`` set, the one option the runner leaves at its
    default. Both exist to show what other serving settings would do (the benchmark's in-process pipeline uses
    neither; the reference passes its ``intra_op_num_threads``).
    """
    import dataclasses

    import onnxruntime as ort

    from drape_runtime.runner import BatchedOnnxRunner, RunnerSettings

    nets: dict[str, Network] = {}
    for spec in contract.NETWORKS.values():
        model_dir = repo / spec.model_name
        settings = RunnerSettings.from_model_config(
            ModelConfig.from_json(load_config(model_dir / "config.pbtxt")), version_dir(model_dir))
        if threads is not None:
            settings = dataclasses.replace(settings, intra_op_num_threads=threads)
        runner = BatchedOnnxRunner(settings)
        if spinning is not None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = settings.intra_op_num_threads, 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            runner.session = ort.InferenceSession(str(settings.model_path), opts, providers=["CPUExecutionProvider"])

        def run(feeds, runner=runner):
            out = runner.run([feeds])[0]
            if isinstance(out, Exception):
                raise out
            return out

        nets[spec.model_name] = run
    return nets
