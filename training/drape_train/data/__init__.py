"""Seeded procedural try-on data (synth), the VITON-HD folder layout (layout), readers of real data layouts
(readers), dataset checks (validate) and colour degradations (degrade)."""
from .degrade import degrade
from .layout import VitonDataset, write_dataset
from .readers import CocoGarments, ItemDataset, garment_group
from .synth import GARMENT_LABELS, LIP_LABELS, LIP_PALETTE, Sample, render_pair

__all__ = ["GARMENT_LABELS", "LIP_LABELS", "LIP_PALETTE", "CocoGarments", "ItemDataset", "Sample", "VitonDataset",
           "degrade", "garment_group", "render_pair", "write_dataset"]
