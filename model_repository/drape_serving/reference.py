"""The served ensembles, run in-process: same ONNX files, same pre/post code, ONNX Runtime, no Triton.

What the ``tryon`` and ``recolor`` ensembles compute, run in this process, for acceptance tests ("the server
returns what the pipeline computes") and for debugging a request without a server. It reads a CPU model
repository as assembled by ``drape_export repo``: each ensemble's steps from its config.pbtxt, each network's
newest version directory (``<model>/<N>/model.onnx``, as Triton's ``version_policy latest 1`` serves it) and
config, and the resolution from ``manifest.json`` (``drape_serving.ensemble``, which the benchmarks run too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from drape_core import contract

from .ensemble import Pipeline, ort_networks

__all__ = ["ReferencePipeline"]


def _bytes(data: bytes | np.ndarray) -> bytes:
    return bytes(data) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8).tobytes()


class ReferencePipeline:
    """``tryon(person, garment)`` and ``recolor(on_model, still)`` on encoded image bytes, in-process: each
    ensemble's steps as its config.pbtxt lists them (``ensemble.Pipeline``), the networks on the serving runner
    with the repository's model.onnx and config (``ensemble.ort_networks``; ``intra_op_num_threads`` overrides
    the config's threads, 0 = one per core)."""

    def __init__(self, repo: str | Path, intra_op_num_threads: int = 0):
        self.repo = Path(repo)
        manifest = json.loads((self.repo / "manifest.json").read_text())
        if manifest.get("target") != "cpu":
            raise ValueError(f"{self.repo}: the reference runs ONNX Runtime and needs a cpu repository, "
                             f"not {manifest.get('target')!r}")
        self.hw = (int(manifest["resolution"]["height"]), int(manifest["resolution"]["width"]))
        networks = ort_networks(self.repo, threads=intra_op_num_threads)
        self.pipelines = {spec.name: Pipeline(self.repo, spec, networks) for spec in contract.ENSEMBLES.values()}

    def tryon(self, person: bytes | np.ndarray, garment: bytes | np.ndarray) -> np.ndarray:
        """``tryon_image`` for one request (uint8 ``H x W x 3``, the person image's size)."""
        (image,) = self.pipelines[contract.TRYON.name]((_bytes(person), _bytes(garment)))
        return image

    def recolor(self, on_model: bytes | np.ndarray, still: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(recolored_image, garment_mask)`` for one request, the on-model image's size."""
        image, mask = self.pipelines[contract.RECOLOR.name]((_bytes(on_model), _bytes(still)))
        return image, mask
