"""Batched ONNX Runtime execution for the CPU network models.

Triton's python backend hands a model every request the dynamic batcher
collected, each with its own tensors. :class:`BatchedOnnxRunner` validates each
request on its own, concatenates the valid ones on the batch axis, runs the
session once, and splits the outputs back, so batching actually reaches the
network, while one malformed request only fails itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .model_config import ModelConfig, TensorConfig

__all__ = ["RequestShapeError", "RunnerSettings", "BatchedOnnxRunner"]


class RequestShapeError(ValueError):
    """One request's tensors do not match the model's config (maps to INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class RunnerSettings:
    """How to run one network: where the graph is and how many threads ONNX Runtime may use.

    ``intra_op_num_threads=0`` lets ONNX Runtime choose (one per physical core).
    """

    model_path: Path
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    max_batch_size: int
    intra_op_num_threads: int = 0

    @classmethod
    def from_model_config(cls, config: ModelConfig, version_dir: str | Path) -> "RunnerSettings":
        """Read the graph file name and thread count from config ``parameters``."""
        file_name = config.parameter("model_file", "model.onnx")
        threads = config.parameter("intra_op_num_threads", "0")
        try:
            n_threads = int(threads)
        except ValueError:
            raise ValueError(f"{config.name}: parameter intra_op_num_threads must be an integer, got {threads!r}") from None
        return cls(
            model_path=Path(version_dir) / file_name,
            inputs=config.inputs,
            outputs=config.outputs,
            max_batch_size=config.max_batch_size,
            intra_op_num_threads=n_threads,
        )


class BatchedOnnxRunner:
    """An ONNX Runtime CPU session that runs many requests as one batch."""

    def __init__(self, settings: RunnerSettings):
        import onnxruntime as ort  # imported here so the rest of drape_serving works without it

        self.settings = settings
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not settings.model_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {settings.model_path}")
        self.session = ort.InferenceSession(str(settings.model_path), options, providers=["CPUExecutionProvider"])
        self._check_graph()
        self.output_names = [t.name for t in settings.outputs]
        self._output_dtypes = [t.np_dtype for t in settings.outputs]

    def _check_graph(self) -> None:
        """Fail at load time, not on the first request, if the graph does not match the config."""
        graph_in = {i.name: i for i in self.session.get_inputs()}
        graph_out = {o.name for o in self.session.get_outputs()}
        problems = []
        for tensor in self.settings.inputs:
            node = graph_in.get(tensor.name)
            if node is None:
                problems.append(f"input {tensor.name!r} missing from graph (has {sorted(graph_in)})")
                continue
            static = [d if isinstance(d, int) else None for d in node.shape[1:]]
            if len(static) != len(tensor.dims) or any(s is not None and s != d for s, d in zip(static, tensor.dims)):
                problems.append(f"input {tensor.name!r}: graph shape {node.shape} vs config dims {list(tensor.dims)}")
        for name in set(graph_in) - {t.name for t in self.settings.inputs}:
            problems.append(f"graph input {name!r} is not in the config")
        for tensor in self.settings.outputs:
            if tensor.name not in graph_out:
                problems.append(f"output {tensor.name!r} missing from graph (has {sorted(graph_out)})")
        if problems:
            raise ValueError(f"{self.settings.model_path}: " + "; ".join(problems))

    def validate(self, request: Mapping[str, np.ndarray]) -> int:
        """Check one request's tensors; return its batch size or raise :class:`RequestShapeError`."""
        batch = None
        for tensor in self.settings.inputs:
            arr = request.get(tensor.name)
            if arr is None:
                raise RequestShapeError(f"{tensor.name}: missing input")
            if arr.dtype != tensor.np_dtype:
                raise RequestShapeError(f"{tensor.name}: expected {tensor.np_dtype}, got {arr.dtype}")
            if arr.ndim != len(tensor.dims) + 1 or tuple(arr.shape[1:]) != tensor.dims:
                raise RequestShapeError(
                    f"{tensor.name}: expected shape [N, {', '.join(map(str, tensor.dims))}], got {list(arr.shape)}"
                )
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise RequestShapeError(f"{tensor.name}: batch size {arr.shape[0]} differs from the other inputs' {batch}")
        if not batch:
            raise RequestShapeError("empty batch")
        return batch

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """Run all requests as one batch; slot ``i`` holds request ``i``'s outputs or its error.

        Invalid requests get a :class:`RequestShapeError` and are left out of
        the batch. If the session itself fails, every batched request gets
        that (internal) error.
        """
        results: list[dict[str, np.ndarray] | Exception] = [None] * len(requests)  # type: ignore[list-item]
        good: list[tuple[int, int]] = []  # (request index, batch size)
        for i, request in enumerate(requests):
            try:
                good.append((i, self.validate(request)))
            except RequestShapeError as exc:
                results[i] = exc
        if not good:
            return results

        feeds = {
            t.name: _concat([requests[i][t.name] for i, _ in good]) for t in self.settings.inputs
        }
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:  # noqa: BLE001 - report per request, keep serving
            error = RuntimeError(f"{self.settings.model_path.parent.parent.name}: ONNX Runtime failed: {exc}")
            for i, _ in good:
                results[i] = error
            return results

        start = 0
        for i, n in good:
            results[i] = {
                name: np.ascontiguousarray(out[start : start + n], dtype=dtype)
                for name, dtype, out in zip(self.output_names, self._output_dtypes, outputs)
            }
            start += n
        return results


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate on axis 0, skipping the copy for a batch of one."""
    return np.ascontiguousarray(arrays[0]) if len(arrays) == 1 else np.concatenate(arrays, axis=0)
