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
  hsl   hue shift up to 180*m degrees, saturation gain 2^(+/-m), lightness shift up to 0.25*m (of 1): a shift,
        not a gain, so light garments get darker and dark ones lighter at the same rate (pastel / deep casts)
  mixed two different modes from the above, in random order, each at magnitude m

What a magnitude means in colour difference: mean CIEDE2000 inside the garment over 32 synthetic on-model images
(`python -m drape_train.data scale`, deterministic; ~1 is a just-noticeable difference, ~2-3 a cast a shopper
notices, >10 another shade):

  mode    m=0.05  m=0.1  m=0.2  m=0.35  m=0.5  m=1
  hsv        2.1    4.4    7.5    13.4   18.7  32.8
  lab        3.5    7.0   12.9    18.3   25.3  35.4
  rgb        2.6    4.2    9.7    13.9   16.5  29.6
  hsl        2.2    3.9    9.1    14.9   19.2  32.0
  mixed      3.9    5.9   14.4    20.3   28.9  34.8

So recolor training's default range 0.05-0.35 spans Delta E 2000 of about 2 to 20; 0.05 and below trains the
subtle white-balance slips catalogue photos actually have.
"""
from __future__ import annotations

import cv2
import numpy as np

MODES = ("hsv", "lab", "rgb", "hsl", "mixed")
BASIC_MODES = MODES[:-1]


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
        modes = [BASIC_MODES[i] for i in rng.permutation(len(BASIC_MODES))[:2]]
        return [step for sub in modes for step in sample_params(rng, sub, m)]
    if mode == "hsv":
        return [{"mode": "hsv", "hue_deg": float(_draw(rng, 180.0 * m)), "sat_gain": float(2 ** _draw(rng, m)),
                 "val_gain": float(2 ** _draw(rng, m / 2))}]
    if mode == "hsl":
        return [{"mode": "hsl", "hue_deg": float(_draw(rng, 180.0 * m)), "sat_gain": float(2 ** _draw(rng, m)),
                 "light_shift": float(_draw(rng, 0.25 * m))}]
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
    if step["mode"] == "hsl":
        hls = cv2.cvtColor(px, cv2.COLOR_RGB2HLS)  # OpenCV orders it H, L, S
        hls[..., 0] = (hls[..., 0] + step["hue_deg"]) % 360.0
        hls[..., 1] = np.clip(hls[..., 1] + step["light_shift"], 0, 1)
        hls[..., 2] = np.clip(hls[..., 2] * step["sat_gain"], 0, 1)
        return np.clip(cv2.cvtColor(hls, cv2.COLOR_HLS2RGB), 0, 1)
    if step["mode"] == "lab":
        lab = cv2.cvtColor(px, cv2.COLOR_RGB2LAB)
        lab[..., 0] = np.clip(lab[..., 0] + step["dL"], 0, 100)
        lab[..., 1] += step["da"]
        lab[..., 2] += step["db"]
        return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1)
    if step["mode"] != "rgb":
        raise ValueError(f"unknown degradation step mode {step['mode']!r}; expected one of {BASIC_MODES}")
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


def measure_scale(magnitudes=(0.05, 0.1, 0.2, 0.35, 0.5, 1.0), n_samples: int = 32, seed: int = 0,
                  height: int = 128, width: int = 96, modes=MODES) -> dict:
    """Mean CIEDE2000 inside the garment, per mode and magnitude, over n_samples synthetic on-model images.

    What "magnitude" means in colour-difference units: the table in the module docstring comes from this
    (`python -m drape_train.data scale`). Each (sample, mode, magnitude) gets its own seeded draw.
    """
    from drape_core.colour import delta_e_2000, rgb_to_lab
    from .synth import render_pair

    samples = [s for k in range((n_samples + 1) // 2) for s in render_pair(10_000 + seed * 1000 + k, height, width)]
    out = {mode: {} for mode in modes}
    for mode in modes:
        for mi, m in enumerate(magnitudes):
            per_sample = []
            for k, s in enumerate(samples[:n_samples]):
                inside = s.garment_mask > 0
                d = degrade(s.image, inside, np.random.default_rng([seed, k, mi, MODES.index(mode)]), mode, m)
                per_sample.append(delta_e_2000(rgb_to_lab(d[inside]), rgb_to_lab(s.image[inside])).mean())
            out[mode][float(m)] = float(np.mean(per_sample))
    return out
