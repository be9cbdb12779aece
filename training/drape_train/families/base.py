"""What a network family is: everything training, export and evaluation do differently per network.

The generic code (``Objective``, ``NetworkDataset``, ``train.py``, ``evaluate``, the export's real samples) asks
the family of ``cfg.network`` and never branches on the name. A family is a stateless object; methods that need
the training state get the ``Objective`` (``obj``: its ``net``, ``cfg``, ``_run`` and ``_image_terms``) or the
``NetworkDataset`` (``ds``: its ``samples``, ``ids``, ``pairs``, ``seed``, ``epoch``, ``magnitude``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from drape_train.models import build


def _np(t: torch.Tensor) -> np.ndarray:
    """Batch tensor -> numpy NHWC (images) or as is."""
    return t.permute(0, 2, 3, 1).numpy() if t.ndim == 4 else t.numpy()


@dataclass
class EvalContext:
    """What a family's evaluation hooks may use besides the batch: where the checkpoint and data are, and how to
    load another network's objective or build another dataset view (evaluate passes its own)."""

    obj: Any
    ckpt: Path
    data: str
    split: str
    batch: int
    load_objective: Callable[[Path], Any]
    dataset: Callable[..., Any]
    add_model: Callable[[str, Any], None]
    add_base: Callable[[str, Any], None]
    state: Any = None


class Family:
    name: str = ""
    # evaluate's bars: (metric, description, check(model, baseline) -> bool)
    bars: tuple[tuple[str, str, Callable[[float, float], bool]], ...] = ()
    image_terms: bool = False     # the perceptual / style / adversarial terms (loss.perceptual, .style, .gan) apply
    disc_condition: int = 0       # channels the discriminator is conditioned on (image_terms families)
    ensemble: str | None = None   # the served ensemble `evaluate --served-by` scores on this family's items
    compares_variants = False     # evaluate compares several checkpoints of it on the same images (onmodel_seg)

    # ------------------------------------------------------------------ the network
    def build(self, cfg) -> nn.Module:
        return build(cfg.network, cfg.model.widths, cfg.data.height, cfg.data.width, **cfg.model_kwargs)

    def card_labels(self) -> list[str] | None:
        """Class names the model card lists (None: the outputs are not classes)."""
        return None

    # ------------------------------------------------------------------ the dataset view
    def prepare(self, ds, pairs: str, root: str, split: str) -> None:
        """Per-family set-up of a NetworkDataset (``pairs``: the dataset's pairing mode)."""

    def length(self, ds) -> int:
        return len(ds.ids)

    def item(self, ds, i: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ the objective
    def inputs(self, b: dict, input_names) -> tuple:
        """The network's exported inputs, built from a batch (ground-truth parses become logits)."""
        raise NotImplementedError

    def with_warps(self, obj, b: dict) -> dict:
        return b

    def train_setup(self, obj, cfg, out: Path, load_objective, console) -> None:
        """Before training: what the family needs besides its own network (TOM: the trained GMM)."""

    def loss(self, obj, b: dict, device: str) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def metrics(self, obj, b: dict) -> dict[str, torch.Tensor]:
        """Per-sample validation metrics [B] for one batch; the mean over the split is reported."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def eval_setup(self, ctx: EvalContext) -> None:
        """Before the test split: attach what the served chain adds, fit what the baseline needs (ctx.state)."""

    def baseline(self, ctx: EvalContext, b: dict) -> None:
        """The classical baseline's rows (ctx.add_base) and extra model rows (ctx.add_model) for one batch."""

    def eval_more(self, ctx: EvalContext, ds) -> None:
        """Further passes after the split (the GMM's unpaired items)."""

    def ensemble_metrics(self, client, b: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{self.name}: no served ensemble to score")

    def report(self, ds) -> dict:
        """Extra fields of the evaluation report."""
        return {}
