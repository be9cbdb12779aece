"""Numpy images and masks as the float tensors every dataset item holds, and warping by an exact flow."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def _img(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0


def _mask(a: np.ndarray) -> torch.Tensor:
    """bool masks, or uint8 masks with 255 on the object -> float {0,1} [1,H,W]."""
    a = np.asarray(a)
    return torch.from_numpy((a if a.dtype == bool else a > 127).astype(np.float32))[None]


def warp_with_flow(src: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `src` (HxW[xC]) at the normalised grid `flow` [H,W,2] (grid_sample, align_corners=False)."""
    h, w = src.shape[:2]
    fx = ((flow[..., 0] + 1) * w - 1) / 2
    fy = ((flow[..., 1] + 1) * h - 1) / 2
    return cv2.remap(src, fx.astype(np.float32), fy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
