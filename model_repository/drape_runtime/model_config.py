"""Typed view of the Triton model configuration handed to python-backend models.

Triton passes ``args["model_config"]`` as a JSON string. The python models in
this repository read their tensor names, dims and parameters from it (rather
than hard-coding them) so one source file can serve several models, e.g. the
shared ``preprocess.py`` behind ``tryon_preprocess`` and ``recolor_preprocess``,
and so the model resolution comes from config, never from code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from drape_core.card import NUMPY_TO_TRITON, TRITON_TO_NUMPY  # noqa: F401 (the dtype maps: one home)

__all__ = ["TensorConfig", "ModelConfig", "TRITON_TO_NUMPY", "NUMPY_TO_TRITON"]



@dataclass(frozen=True)
class TensorConfig:
    """One input or output: name, Triton type (``"TYPE_FP32"``) and dims excluding the batch axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    @property
    def np_dtype(self) -> np.dtype:
        try:
            return TRITON_TO_NUMPY[self.data_type]
        except KeyError:
            raise ValueError(f"tensor {self.name!r}: unsupported data type {self.data_type}") from None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "TensorConfig":
        # Triton serialises int64 dims as JSON numbers or strings depending on the path; accept both.
        return cls(name=str(obj["name"]), data_type=str(obj["data_type"]), dims=tuple(int(d) for d in obj.get("dims", ())))


@dataclass(frozen=True)
class ModelConfig:
    """The parts of a Triton model config the python models use."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, config: str | Mapping[str, Any]) -> "ModelConfig":
        """Parse ``args["model_config"]`` (JSON text or an already-decoded dict)."""
        obj = json.loads(config) if isinstance(config, str) else config
        params = {
            str(key): str(value.get("string_value", "")) if isinstance(value, Mapping) else str(value)
            for key, value in (obj.get("parameters") or {}).items()
        }
        return cls(
            name=str(obj.get("name", "")),
            max_batch_size=int(obj.get("max_batch_size", 0)),
            inputs=tuple(TensorConfig.from_json(t) for t in obj.get("input", ())),
            outputs=tuple(TensorConfig.from_json(t) for t in obj.get("output", ())),
            parameters=params,
        )

    def input(self, name: str) -> TensorConfig:
        return _by_name(self.inputs, name, f"model {self.name!r} has no input")

    def output(self, name: str) -> TensorConfig:
        return _by_name(self.outputs, name, f"model {self.name!r} has no output")

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """A ``parameters { key: ... value { string_value: ... } }`` entry, or ``default``."""
        return self.parameters.get(key, default)


def _by_name(tensors: tuple[TensorConfig, ...], name: str, what: str) -> TensorConfig:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise KeyError(f"{what} {name!r} (has: {', '.join(t.name for t in tensors)})")
