"""Refuse TensorRT plans built for another GPU architecture or TensorRT version, before Triton loads them.

A serialized TensorRT engine only deserializes with the exact TensorRT version that built it, and its kernels
were chosen for one GPU architecture (compute capability). Triton would fail such a plan at load time with a
terse deserialization error, or (same TensorRT, other GPU) load it and run slower or wrong-tuned. The ``trt``
export step therefore records both in the model card (``card["tensorrt"]``); :mod:`drape_core.plans` compares that
record with a runtime (the repository assembly calls its :func:`check_card` for every plan it copies), and
:func:`check_repository` here is the pre-start check ``drape_serving.server`` runs on a GPU repository (also
``python -m drape_serving.plan_check --model-repository ...``; ``--trt-version``/``--gpu-arch`` override the
detected runtime).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from drape_core.card import CARD_FILE, CardError, read_card
from drape_core.plans import PlanMismatchError, PlanRecord, Runtime, check_card, detect_runtime, trt_release

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

PLAN_FILE = "model.plan"
MANIFEST_FILE = "manifest.json"


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
            card = read_card(card_path)
        except CardError as exc:
            raise PlanMismatchError(f"{where}: {exc}") from None
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
