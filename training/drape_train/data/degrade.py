"""Seeded colour degradations inside a mask: the inputs of recolor training.

The recolor model sees an on-model image whose garment has the wrong colour and must restore it from the still;
the target is the untouched image. Only pixels inside the mask change, so background and skin stay exact and
the loss can focus on the garment.

Magnitude m in [0, 1] scales every mode: ~0.05 is a subtle cast (a white-balance slip), 1 a different colour.
Each parameter is drawn with a random sign and an absolute value uniform in [0.25, 1] x its maximum (no draw is
a silent no-op); gains are powers of two, so brightening and darkening are symmetric:
  hsv   hue shift up to 180*m degrees, saturation gain 2^(+/-m), value gain 2^(+/-m/2)
  lab   L* shift up to 50*m, a* and b* shifts up to 100*m each (CIELAB units; 1 unit ~ 1 Delta E 1976)
  rgb   per-channel gain 2^(+/-m) and offset up to 64*m (of 255)
  mixed two different modes from the above, in random order, each at magnitude m
"""
from __future__ import annotations

import cv2
import numpy as np

MODES = ("hsv", "lab", "rgb", "mixed")


def _draw(rng: np.random.Generator, max_abs: float, size=None):
    """Random sign times U(0.25, 1) * max_abs."""
    sign = np.where(rng.random(size) < 0.5, -1.0, 1.0)
    return sign * rng.uniform(0.25, 1.0, size) * max_abs


def sample_params(rng: np.random.Generator, mode: str = "mixed", magnitude: float = 0.1) -> list[dict]:
    """The degradation as data (a list of steps), so callers can log or replay it with apply()."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    m = float(magnitude)
    if mode == "mixed":
        modes = [MODES[i] for i in rng.permutation(3)[:2]]
        return [step for sub in modes for step in sample_params(rng, sub, m)]
    if mode == "hsv":
        return [{"mode": "hsv", "hue_deg": float(_draw(rng, 180.0 * m)), "sat_gain": float(2 ** _draw(rng, m)),
                 "val_gain": float(2 ** _draw(rng, m / 2))}]
    if mode == "lab":
        return [{"mode": "lab", "dL": float(_draw(rng, 50.0 * m)), "da": float(_draw(rng, 100.0 * m)),
                 "db": float(_draw(rng, 100.0 * m))}]
    return [{"mode": "rgb", "gain": (2 ** _draw(rng, m, 3)).tolist(), "offset": _draw(rng, 64.0 * m, 3).tolist()}]


def _as_bool(mask: np.ndarray) -> np.ndarray:
    """bool as is; 0/255 (or JPEG-noisy) uint8 thresholded at 128; 0/1 ints > 0; floats >= 0.5."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask >= 128 if mask.max(initial=0) > 1 else mask > 0
    return mask >= 0.5


def _apply_step(px: np.ndarray, step: dict) -> np.ndarray:
    """px: float32 [N,1,3] RGB in [0,1] -> degraded, same layout (cv2 colour conversions on the masked pixels)."""
    if step["mode"] == "hsv":
        hsv = cv2.cvtColor(px, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + step["hue_deg"]) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * step["sat_gain"], 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * step["val_gain"], 0, 1)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if step["mode"] == "lab":
        lab = cv2.cvtColor(px, cv2.COLOR_RGB2LAB)
        lab[..., 0] = np.clip(lab[..., 0] + step["dL"], 0, 100)
        lab[..., 1] += step["da"]
        lab[..., 2] += step["db"]
        return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1)
    gain = np.asarray(step["gain"], np.float32)
    offset = np.asarray(step["offset"], np.float32) / 255.0
    return np.clip(px * gain + offset, 0, 1)


def apply(image: np.ndarray, mask: np.ndarray, steps: list[dict]) -> np.ndarray:
    """Apply degradation steps to the RGB uint8 image inside mask; pixels outside are returned untouched."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {image.shape}")
    inside = _as_bool(mask)
    if inside.shape != image.shape[:2]:
        raise ValueError(f"mask shape {inside.shape} does not match image {image.shape[:2]}")
    out = image.copy()
    px = (image[inside].astype(np.float32) / 255.0)[:, None, :]
    if px.size == 0:
        return out
    for step in steps:
        px = _apply_step(px, step)
    out[inside] = np.clip(px[:, 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def degrade(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, mode: str = "mixed",
            magnitude: float = 0.1) -> np.ndarray:
    """Seeded colour degradation of image (RGB uint8) inside mask; see the module docstring for magnitude."""
    return apply(image, mask, sample_params(rng, mode, magnitude))
