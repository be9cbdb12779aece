"""The model card: what training writes beside a network's weights and every later stage reads.

``<checkpoints>/<network>/card.json`` names the network, its resolution, its tensors (name, dtype, shape without
the batch axis), the largest batch it is served with, its metrics and how it was trained; export adds its ONNX
measurements (``onnx``) and, on GPU machines, the TensorRT build record (``tensorrt``). This module is the only
place that parses or writes that JSON: training, export, the repository assembly, the plan check, evaluation and
the benchmarks all go through :func:`read_card` / :meth:`ModelCard.write`. Torch-free (pydantic).

Changing the card's layout means bumping :data:`FORMAT_VERSION`; readers refuse any other version by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from .contract import MAX_BATCH_SIZE

__all__ = ["FORMAT_VERSION", "CARD_FILE", "DTYPES", "TRITON_TO_NUMPY", "NUMPY_TO_TRITON", "CardError", "TensorSpec",
           "Resolution", "ModelCard", "read_card", "MAX_BATCH_SIZE"]

FORMAT_VERSION = 1
CARD_FILE = "card.json"
# The dtype maps every stage shares: card dtype -> Triton config data type, and Triton config type <-> numpy.
DTYPES: dict[str, str] = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8",
                          "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT16": np.dtype(np.int16),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
}
NUMPY_TO_TRITON = {v: k for k, v in TRITON_TO_NUMPY.items()}


class CardError(ValueError):
    """A model card that cannot be read or does not validate; the message names the card."""


class TensorSpec(BaseModel):
    """One network tensor: name, dtype (a key of :data:`DTYPES`) and shape without the batch axis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype: str
    shape: tuple[PositiveInt, ...]

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unsupported dtype {v!r} (known: {sorted(DTYPES)})")
        return v

    @property
    def triton_type(self) -> str:
        return DTYPES[self.dtype]


class Resolution(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    height: PositiveInt
    width: PositiveInt


class ModelCard(BaseModel):
    """A network's card. Sections this schema does not name (future stages' records) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str
    family: str
    format_version: int
    resolution: Resolution
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: PositiveInt = MAX_BATCH_SIZE
    normalization: str = ""
    labels: list[str] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"format_version {v!r} is not {FORMAT_VERSION} (re-train or re-export with this drape)")
        return v

    @property
    def hw(self) -> tuple[int, int]:
        return (self.resolution.height, self.resolution.width)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def section(self, name: str) -> dict[str, Any] | None:
        """A section added by a later stage (``"onnx"``, ``"tensorrt"``), or None if the card has none yet."""
        value = (self.model_extra or {}).get(name)
        return value if isinstance(value, dict) else None

    def with_section(self, name: str, value: dict[str, Any]) -> "ModelCard":
        """A copy with section ``name`` set (added at the end, as a later stage's record)."""
        return ModelCard.of({**self.dump(), name: value})

    def dump(self) -> dict[str, Any]:
        """The card as its JSON holds it (lists, not tuples; NaN metrics stay NaN), keys in the schema's order and
        later sections after them."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)

    def write(self, path: str | Path) -> Path:
        """Write ``path`` (a card file, or the directory to hold ``card.json``) atomically: temp file + rename."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def of(cls, card: "ModelCard | Mapping[str, Any]", where: str = "model card") -> "ModelCard":
        """``card`` validated (a ModelCard is returned as it is); :class:`CardError` names ``where``."""
        if isinstance(card, ModelCard):
            return card
        try:
            return cls.model_validate(dict(card))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in exc.errors())
            raise CardError(f"{where}: {problems}") from None
        except (TypeError, ValueError) as exc:
            raise CardError(f"{where}: not a model card ({exc})") from None


def read_card(path: str | Path) -> ModelCard:
    """Read and validate ``path`` (a card file, or a directory holding ``card.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: cannot read model card: {exc}") from None
    if not isinstance(raw, dict):
        raise CardError(f"{path}: not a model card (a JSON {type(raw).__name__})")
    return ModelCard.of(raw, str(path))
