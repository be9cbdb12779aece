"""The served ensembles, run in-process: same ONNX files, same pre/post code, ONNX Runtime, no Triton.

What the ``tryon`` and ``recolor`` ensembles compute, written out as plain calls, for acceptance tests ("the
server returns what the pipeline computes") and for debugging a request without a server. It reads a CPU
model repository as assembled by ``drape_export repo``: each network's newest version directory
(``<model>/<N>/model.onnx``, as Triton's ``version_policy latest 1`` serves it) and its card, and the
resolution from ``manifest.json``. The wiring follows ``configs/tryon.pbtxt`` and ``configs/recolor.pbtxt``
step by step; a drift between the two is what the acceptance test catches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from drape_core import contract
from drape_core.card import CARD_FILE, read_card
from drape_runtime.model_config import TensorConfig
from drape_runtime.prepost import PreprocessLayout, RecolorPostLayout, TryonPostLayout, preprocess_pair
from drape_runtime.runner import BatchedOnnxRunner, RunnerSettings

__all__ = ["ReferencePipeline"]


def _encoded(data: bytes | np.ndarray) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    return arr.reshape(1, -1)


class ReferencePipeline:
    """``tryon(person, garment)`` and ``recolor(on_model, still)`` on encoded image bytes, in-process."""

    def __init__(self, repo: str | Path, intra_op_num_threads: int = 0):
        self.repo = Path(repo)
        manifest = json.loads((self.repo / "manifest.json").read_text())
        if manifest.get("target") != "cpu":
            raise ValueError(f"{self.repo}: the reference runs ONNX Runtime and needs a cpu repository, "
                             f"not {manifest.get('target')!r}")
        self.hw = (int(manifest["resolution"]["height"]), int(manifest["resolution"]["width"]))
        self.runners: dict[str, BatchedOnnxRunner] = {}
        for spec in contract.NETWORKS.values():
            model_dir = self.repo / spec.model_name
            if model_dir.is_dir():
                self.runners[spec.model_name] = self._runner(model_dir, intra_op_num_threads)

    @staticmethod
    def _runner(model_dir: Path, threads: int) -> BatchedOnnxRunner:
        versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        if not versions:
            raise FileNotFoundError(f"{model_dir}: no version directory")
        version = versions[-1]
        card = read_card(version if (version / CARD_FILE).is_file() else model_dir)

        def tensors(specs):
            return tuple(TensorConfig(s.name, s.triton_type, s.shape) for s in specs)

        return BatchedOnnxRunner(RunnerSettings(version / "model.onnx", tensors(card.inputs),
                                                tensors(card.outputs), card.max_batch_size, threads))

    def _net(self, model: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        runner = self.runners.get(model)
        if runner is None:
            raise KeyError(f"{self.repo} has no network model {model!r}")
        (result,) = runner.run([inputs])
        if isinstance(result, Exception):
            raise result
        return result

    def _pre(self, spec: contract.EnsembleSpec, a, b) -> dict[str, np.ndarray]:
        layout = PreprocessLayout(spec.input_names[0], spec.input_names[1], *contract.PREPROCESS_OUTPUTS, *self.hw)
        return preprocess_pair(_encoded(a), _encoded(b), layout)

    def tryon(self, person: bytes | np.ndarray, garment: bytes | np.ndarray) -> np.ndarray:
        """``tryon_image`` for one request (uint8 ``H x W x 3``, the person image's size)."""
        pre = self._pre(contract.TRYON, person, garment)
        parsing = self._net("human_parsing", image=pre["image_a"])["parsing_logits"]
        mask = self._net("garment_seg", image=pre["image_b"])["mask_logits"]
        warped = self._net("gmm", parsing_logits=parsing, garment=pre["image_b"], garment_mask_logits=mask)
        tom = self._net("tom", person=pre["image_a"], parsing_logits=parsing, warped_garment=warped["warped_garment"],
                        warped_mask=warped["warped_mask"])
        out = TryonPostLayout().run({"tryon": tom["tryon"], "edit_mask": tom["edit_mask"], "orig": pre["orig_a"]})
        return out[contract.TRYON.outputs[0].name][0]

    def recolor(self, on_model: bytes | np.ndarray, still: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(recolored_image, garment_mask)`` for one request, the on-model image's size."""
        pre = self._pre(contract.RECOLOR, on_model, still)
        parsing = self._net("human_parsing", image=pre["image_a"])["parsing_logits"]
        mask = self._net("garment_seg", image=pre["image_b"])["mask_logits"]
        net = self._net("recolor_net", on_model=pre["image_a"], still=pre["image_b"], parsing_logits=parsing,
                        still_mask_logits=mask)
        layout = RecolorPostLayout()
        out = layout.run({"recolored": net["recolored"], "model_input": pre["image_a"],
                          "garment_mask": net["garment_mask"], "orig": pre["orig_a"], "still": pre["image_b"],
                          "still_mask_logits": mask})
        return out[layout.output_image][0], out[layout.output_mask][0]
