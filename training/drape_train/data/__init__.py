"""Seeded procedural try-on data (synth), the VITON-HD folder layout (layout) and colour degradations (degrade)."""
from .degrade import degrade
from .layout import VitonDataset, write_dataset
from .synth import GARMENT_LABELS, LIP_LABELS, LIP_PALETTE, Sample, render_pair

__all__ = ["GARMENT_LABELS", "LIP_LABELS", "LIP_PALETTE", "Sample", "VitonDataset", "degrade", "render_pair",
           "write_dataset"]
