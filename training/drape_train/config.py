"""Typed training configuration: one YAML per network, validated into pydantic models; defaults live here only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drape_core.contract import DEFAULT_RESOLUTION
from drape_train.data.layout import RECOLOR_MAGNITUDE, magnitude_range

NetworkName = Literal["garment_seg", "human_parsing", "gmm", "tom", "recolor", "onmodel_seg"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelCfg(_Strict):
    widths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128])
    grid_size: int | None = None      # gmm: TPS control grid is grid_size x grid_size
    prewarp: bool | None = None       # gmm: correlate the person with the still as the alignment already warps it
    gate_widths: list[int] | None = None  # gmm: visibility gate U-Net widths (cuts occluded / too-wide warp); None = off
    gate_stride: int | None = None    # gmm: 2 = the gate's U-Net starts at half resolution, logits upsampled
    heads: int | None = None          # recolor: cross-attention heads
    shading_stats: bool | None = None  # recolor: the colour head also reads shading-free colour statistics
    shading_pairs: bool | None = None  # recolor: ...and the colour correspondences' statistics, shading-free
    stem_stride: int | None = None    # segmentation: 2 = encoder starts at half resolution, logits upsampled
    attention: bool | None = None     # segmentation: attention-gated skips + bottleneck self-attention
    dual: bool | None = None          # onmodel_seg: also read the still and cross-attend to it (False = photo only)
    cross_skip: bool | None = None    # onmodel_seg (dual): the next finer skip level cross-attends to the still too
    still_widths: list[int] | None = None   # onmodel_seg (dual): still encoder widths (default: half of widths)

    @field_validator("gate_stride", "stem_stride")
    @classmethod
    def _stride(cls, v):
        if v is not None and v not in (1, 2):   # the U-Net stem has a full- and a half-resolution form only
            raise ValueError(f"must be 1 (full resolution) or 2 (half resolution), got {v}")
        return v

    @model_validator(mode="after")
    def _gate(self):
        if self.gate_stride is not None and self.gate_widths is None:
            raise ValueError("gate_stride is set but gate_widths is not: the stride belongs to the visibility gate, "
                             "which gate_widths turns on (e.g. gate_widths: [8, 16, 32, 64])")
        return self


class DataCfg(_Strict):
    root: str = "data/synth"
    height: int = DEFAULT_RESOLUTION[0]   # drape_core.contract: the one default
    width: int = DEFAULT_RESOLUTION[1]
    # tom: the garment as the exact flow warps it, or as the trained GMM (<out>/gmm) warps it — what serving feeds
    # TOM, so the renderer learns to fix the GMM's misfits instead of meeting them first in production
    warps: Literal["exact", "gmm"] = "exact"
    # gmm: which person/still pairs it trains on: "same" (the person's own garment, VITON's paired setting),
    # "cross" (another garment on the same person: what try-on serves; synthetic studio only) or "mixed"
    pairs: Literal["same", "cross", "mixed"] = "same"
    # recolor: the range each item's degradation magnitude is drawn from, in training and validation (the
    # generator's documented range; `evaluate --magnitude` scores any other)
    magnitude: tuple[float, float] = RECOLOR_MAGNITUDE

    @field_validator("magnitude")
    @classmethod
    def _range(cls, v):
        return magnitude_range(v)


class ScheduleCfg(_Strict):
    steps: int = 2000                 # the default schedule
    quick_steps: int = 120            # what `make serve` trains on a fresh clone
    batch_size: int = 4
    lr: float = 2e-3
    warmup_steps: int = 20
    val_every: int = 200
    early_stop_patience: int = 0      # validations without improvement before stopping; 0 = never
    seed: int = 0


class LossCfg(_Strict):
    l1: float = 1.0
    dice: float = 1.0
    delta_e: float = 0.0
    mask: float = 1.0
    smooth: float = 0.0
    flow: float = 0.0                 # gmm: L1 between the TPS grid and the exact warp, where the data has one
    mask_dice: float = 0.0            # gmm: soft Dice between the warped still mask and the visible garment
    gate: float = 0.0                 # gmm: BCE of the visibility gate against the visible garment, inside the TPS mask
    focal: float = 0.0                # segmentation options
    tversky: float = 0.0
    boundary: float = 0.0
    perceptual: float = 0.0           # image outputs; need vgg19_weights (disabled with a log line otherwise)
    style: float = 0.0
    vgg19_weights: str | None = None  # torchvision-format VGG19 state dict path; env DRAPE_VGG19_WEIGHTS also works
    gan: float = 0.0                  # optional PatchGAN adversarial term (tom, recolor)
    gan_lr: float = 2e-4


class TrainConfig(_Strict):
    network: NetworkName
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    schedule: ScheduleCfg = Field(default_factory=ScheduleCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    deepspeed: str                    # path of the ds_config JSON, relative to this YAML
    metric: str                       # validation metric used for best-checkpoint selection
    metric_mode: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _gate_loss_needs_a_gate(self):
        if self.loss.gate and self.model.gate_widths is None:
            raise ValueError(f"loss.gate is {self.loss.gate} but the model has no visibility gate to train "
                             "(set model.gate_widths, or loss.gate: 0)")
        return self

    @property
    def model_kwargs(self) -> dict:
        kw = {}
        if self.model.grid_size is not None:
            kw["grid_size"] = self.model.grid_size
        if self.model.prewarp is not None:
            kw["prewarp"] = self.model.prewarp
        if self.model.heads is not None:
            kw["heads"] = self.model.heads
        if self.model.stem_stride is not None:
            kw["stem_stride"] = self.model.stem_stride
        if self.model.attention is not None:
            kw["attention"] = self.model.attention
        for key in ("dual", "cross_skip", "still_widths", "shading_stats", "shading_pairs", "gate_widths", "gate_stride"):
            if getattr(self.model, key) is not None:
                kw[key] = getattr(self.model, key)
        return kw


def load_config(path: str | Path) -> tuple[TrainConfig, dict]:
    """Return the validated training config and its DeepSpeed config dict."""
    path = Path(path)
    cfg = TrainConfig.model_validate(yaml.safe_load(path.read_text()))
    ds = json.loads((path.parent / cfg.deepspeed).read_text())
    return cfg, ds
