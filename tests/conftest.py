"""Shared fixtures: the real CPU model repository built by the quick pipeline, and a server on free ports."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_REPO = ROOT / "build" / "model_repository" / "cpu"
CHECKPOINTS = ROOT / "build" / "checkpoints"
ONNX_DIR = ROOT / "build" / "onnx"


@pytest.fixture(scope="session")
def cpu_repo() -> Path:
    """The repository `make quick` assembles. Missing means the pipeline did not run: fail, never skip."""
    if not (CPU_REPO / "tryon" / "config.pbtxt").exists():
        pytest.fail(f"{CPU_REPO} is missing: run `make quick` (make test does it first)")
    return CPU_REPO


@pytest.fixture(scope="session")
def real_server(cpu_repo, tmp_path_factory):
    """One real tritonserver over the trained CPU repository, on free ports (a `make serve` may be running)."""
    from drape_serving.server import start_server

    log = tmp_path_factory.mktemp("e2e") / "tritonserver.log"
    with start_server(cpu_repo, log_file=log, ready_timeout=240) as handle:
        yield handle
