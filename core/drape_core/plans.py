"""Can a TensorRT plan run here? The record a plan's model card carries, the runtime, and their comparison.

A serialized TensorRT engine only deserializes with the exact TensorRT release that built it, and its kernels were
chosen for one GPU architecture (compute capability). The ``trt`` export step records both in the model card
(``card["tensorrt"]``); :func:`check_card` compares that record with a :class:`Runtime`. The repository assembly
(``drape_export``) calls it for every plan it copies, and ``drape_serving.plan_check`` for every plan of a
repository before Triton starts. Standard library only; TensorRT is imported only if installed. The runtime is read
from ``nvidia-smi`` and the ``libnvinfer.so.X.Y.Z`` on the library path (what a Triton image ships), or given
explicitly (``$DRAPE_TRT_VERSION``/``$DRAPE_GPU_ARCH``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping

from .card import ModelCard

__all__ = ["PlanMismatchError", "PlanRecord", "Runtime", "detect_runtime", "check_card", "trt_release"]

_LIBNVINFER = re.compile(r"libnvinfer\.so\.(\d+(?:\.\d+){1,3})$")


class PlanMismatchError(RuntimeError):
    """A plan cannot run on this runtime (or carries no record to tell). The message names the model."""


def trt_release(version: str) -> str:
    """``"10.3.0.26"`` -> ``"10.3.0"``: engines are compatible within one major.minor.patch release."""
    parts = str(version).strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a TensorRT version: {version!r}")
    return ".".join((parts + ["0"])[:3])


@dataclass(frozen=True)
class PlanRecord:
    """What a model card says a plan was built for (``card["tensorrt"]``)."""

    trt_version: str
    compute_capability: str
    gpu_name: str

    @classmethod
    def from_card(cls, card: ModelCard | Mapping[str, Any], where: str) -> "PlanRecord":
        section = ModelCard.of(card, where).section("tensorrt")
        if not isinstance(section, dict):
            raise PlanMismatchError(
                f"{where}: the model card has no 'tensorrt' record, so the plan's TensorRT version and GPU "
                "architecture are unknown; rebuild it with `python -m drape_export trt`"
            )
        try:
            return cls(str(section["version"]), str(section["compute_capability"]), str(section.get("gpu_name", "")))
        except KeyError as exc:
            raise PlanMismatchError(f"{where}: the model card's 'tensorrt' record lacks {exc}") from None


@dataclass(frozen=True)
class Runtime:
    """Where plans will run. ``None`` fields are unknown and not checked (the report says so)."""

    trt_version: str | None = None
    compute_capability: str | None = None
    gpu_name: str | None = None

    def describe(self) -> str:
        return (f"TensorRT {self.trt_version or 'unknown'}, compute capability "
                f"{self.compute_capability or 'unknown'} ({self.gpu_name or 'GPU unknown'})")


def _nvidia_smi() -> tuple[str | None, str | None]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, None
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap,name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None, None
    if not out:
        return None, None
    cap, _, name = out[0].partition(",")
    return cap.strip() or None, name.strip() or None


def _libnvinfer_version() -> str | None:
    """The TensorRT runtime Triton will use: the versioned ``libnvinfer.so.X.Y.Z`` on the library path."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib", "/usr/lib64"]
    found = []
    for d in dirs:
        for path in glob.glob(os.path.join(d, "libnvinfer.so.*")):
            m = _LIBNVINFER.search(os.path.basename(path))
            if m and m.group(1).count(".") >= 2:
                found.append(m.group(1))
    return max(found, key=lambda v: tuple(int(p) for p in v.split("."))) if found else None


def detect_runtime(trt_version: str | None = None, compute_capability: str | None = None) -> Runtime:
    """This machine's runtime; explicit arguments (or ``DRAPE_TRT_VERSION``/``DRAPE_GPU_ARCH``) win."""
    trt_version = trt_version or os.environ.get("DRAPE_TRT_VERSION") or None
    compute_capability = compute_capability or os.environ.get("DRAPE_GPU_ARCH") or None
    cap, name = _nvidia_smi()
    if trt_version is None:
        try:
            import tensorrt  # noqa: PLC0415 - optional; present on GPU build machines

            trt_version = tensorrt.__version__
        except ImportError:
            trt_version = _libnvinfer_version()
    return Runtime(trt_version=trt_version, compute_capability=compute_capability or cap, gpu_name=name)


def check_card(card: ModelCard | Mapping[str, Any], runtime: Runtime, where: str) -> list[str]:
    """Raise :class:`PlanMismatchError` if the plan described by ``card`` cannot run on ``runtime``.

    Returns notes on what could not be verified (unknown runtime fields, another GPU model of the same
    architecture), for the caller to print.
    """
    record = PlanRecord.from_card(card, where)
    problems, notes = [], []
    if runtime.trt_version is None:
        notes.append(f"{where}: TensorRT version of the runtime unknown; plan built with {record.trt_version}")
    elif trt_release(runtime.trt_version) != trt_release(record.trt_version):
        problems.append(f"built with TensorRT {record.trt_version}, the runtime has {runtime.trt_version}")
    if runtime.compute_capability is None:
        notes.append(f"{where}: GPU architecture of the runtime unknown; plan built for compute capability "
                     f"{record.compute_capability}")
    elif runtime.compute_capability.strip() != record.compute_capability.strip():
        problems.append(f"built for compute capability {record.compute_capability} ({record.gpu_name or 'GPU'}), "
                        f"the runtime GPU is {runtime.compute_capability} ({runtime.gpu_name or 'GPU'})")
    elif runtime.gpu_name and record.gpu_name and runtime.gpu_name != record.gpu_name:
        notes.append(f"{where}: built on {record.gpu_name}, running on {runtime.gpu_name} (same architecture; "
                     "rebuild on the serving GPU model for tuned kernels)")
    if problems:
        raise PlanMismatchError(f"{where}: TensorRT plan does not match this runtime: {'; '.join(problems)}. "
                                "Rebuild the plan on the serving GPU with the serving image's TensorRT "
                                "(`python -m drape_export trt`), then re-assemble the repository.")
    return notes
