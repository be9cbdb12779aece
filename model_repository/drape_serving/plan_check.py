"""Refuse TensorRT plans built for another GPU architecture or TensorRT version, before Triton loads them.

A serialized TensorRT engine only deserializes with the exact TensorRT version that built it, and its kernels
were chosen for one GPU architecture (compute capability). Triton would fail such a plan at load time with a
terse deserialization error, or (same TensorRT, other GPU) load it and run slower or wrong-tuned. The ``trt``
export step therefore records both in the model card (``card["tensorrt"]``), and this module compares that
record with a runtime: the repository assembly calls :func:`check_card` for every plan it copies, and
:func:`check_repository` is the pre-start check ``drape_serving.server`` runs on a GPU repository (also
``python -m drape_serving.plan_check --model-repository ...``).

Torch-free; TensorRT is imported only if installed. The runtime is read from ``nvidia-smi`` and the
``libnvinfer.so.X.Y.Z`` on the library path (what a Triton image ships), or given explicitly
(``--trt-version``/``--gpu-arch``, or ``$DRAPE_TRT_VERSION``/``$DRAPE_GPU_ARCH``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PlanMismatchError",
    "PlanRecord",
    "Runtime",
    "detect_runtime",
    "check_card",
    "check_repository",
    "trt_release",
    "main",
]

CARD_FILE = "card.json"
PLAN_FILE = "model.plan"
MANIFEST_FILE = "manifest.json"
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
    def from_card(cls, card: dict, where: str) -> "PlanRecord":
        section = card.get("tensorrt")
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


def check_card(card: dict, runtime: Runtime, where: str) -> list[str]:
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


def _latest_version_dir(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def check_repository(repo: str | Path, runtime: Runtime | None = None) -> list[str]:
    """Pre-start check: every ``tensorrt_plan`` model's card must match ``runtime`` (detected if ``None``).

    A repository without plans (the CPU target) passes with no notes.
    """
    repo = Path(repo)
    plans = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        if re.search(r'^\s*platform:\s*"tensorrt_plan"', config.read_text(), re.MULTILINE):
            plans.append(config.parent)
    if not plans:
        return []
    runtime = runtime or detect_runtime()
    notes = []
    for model_dir in plans:
        where = f"model {model_dir.name!r}"
        version = _latest_version_dir(model_dir)
        if version is None or not (version / PLAN_FILE).is_file():
            raise PlanMismatchError(f"{where}: no {PLAN_FILE} in {version or model_dir}; build it with "
                                    "`python -m drape_export trt` and re-assemble the repository")
        # The card of the version being served wins; the model-level copy is the fallback.
        card_path = version / CARD_FILE if version is not None and (version / CARD_FILE).is_file() else model_dir / CARD_FILE
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PlanMismatchError(f"{where}: cannot read {card_path}: {exc}") from None
        notes += check_card(card, runtime, where)
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drape_serving.plan_check",
                                     description="Check a model repository's TensorRT plans against this GPU and "
                                                 "TensorRT runtime before starting Triton.")
    parser.add_argument("--model-repository", required=True, help="e.g. build/model_repository/gpu")
    parser.add_argument("--trt-version", default=None, help="runtime TensorRT version (default: detected)")
    parser.add_argument("--gpu-arch", default=None, help="runtime compute capability, e.g. 9.0 (default: detected)")
    args = parser.parse_args(argv)
    runtime = detect_runtime(args.trt_version, args.gpu_arch)
    try:
        notes = check_repository(args.model_repository, runtime)
    except PlanMismatchError as exc:
        print(f"plan-check: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"plan-check: note: {note}", file=sys.stderr)
    print(f"plan-check: ok ({runtime.describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
