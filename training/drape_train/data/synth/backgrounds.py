"""Studio backdrops (BACKGROUNDS): flat, gradient, textured, studio (wall + floor) and cluttered (with furniture)."""
from __future__ import annotations

import cv2
import numpy as np

from .common import BACKGROUNDS, _ellipse, _grid, _hsv_colour, _poly, _rect

def _background(rng, h, w, cx, ground, u) -> tuple[np.ndarray, np.ndarray, str]:
    """Backdrop albedo, its shading (a soft contact shadow at the feet) and its kind (one of BACKGROUNDS).

    Sizes are in body units, so the same scene renders at every resolution. Backgrounds are albedo only: the
    parse stays Background (0) whatever is drawn here, and the person is painted over it.
    """
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    base = np.clip(_hsv_colour(rng, (0.0, 0.25), (0.7, 0.98)), 0, 255)
    xx, yy = _grid(h, w)
    if kind == "flat":
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif kind == "gradient":
        img = _gradient_backdrop(rng, base, xx, yy, h, w)
    elif kind == "textured":
        img = _textured_backdrop(rng, base, xx, yy, h, w, u)
    else:  # "studio" (wall + floor) and "cluttered" (the same room with furniture in it)
        horizon = ground - rng.uniform(0.06, 0.14) * u
        floor = base * rng.uniform(0.72, 0.9)
        img = np.where((yy > horizon)[..., None], floor, base).astype(np.float32)
        if kind == "cluttered":
            _furnish(rng, img, horizon, cx, u)
            sigma = 0.002 * u  # a little depth of field: the room is behind the focus plane
            img = cv2.GaussianBlur(img, (0, 0), sigma) if sigma >= 0.5 else img
    shade = np.ones((h, w), np.float32)
    r = ((xx - cx) / (0.16 * u)) ** 2 + ((yy - ground + 0.012 * u) / (0.022 * u)) ** 2
    shade -= 0.3 * np.exp(-2.0 * r)
    return img, shade, kind


def _gradient_backdrop(rng, base, xx, yy, h, w) -> np.ndarray:
    """Linear (any direction) or radial (vignette) blend from the base colour to a darker, slightly shifted one."""
    other = np.clip(base * rng.uniform(0.6, 0.9) + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)
    if rng.random() < 0.7:
        a = np.radians(rng.uniform(0, 360))
        proj = (xx - w / 2) * np.float32(np.cos(a)) + (yy - h / 2) * np.float32(np.sin(a))
        t = proj / np.float32(abs(np.cos(a)) * w / 2 + abs(np.sin(a)) * h / 2) * 0.5 + 0.5
    else:
        t = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) / np.float32(np.sqrt(2))
    t = np.clip(t, 0, 1)[..., None]
    return base + t * (other - base)


def _textured_backdrop(rng, base, xx, yy, h, w, u) -> np.ndarray:
    """Soft blotches (fixed-size noise, so the same at every resolution) plus a faint wallpaper motif."""
    small = rng.normal(0, 1, (12, 9, 1)) + rng.normal(0, 0.25, (12, 9, 3))  # mostly lightness, a little tint
    img = base + cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(4, 12)
    motif, period = rng.integers(3), rng.uniform(0.03, 0.08) * u
    contrast = np.float32(rng.uniform(0.04, 0.1))
    if motif == 1:      # wallpaper stripes
        on = (xx / period) % 1.0 < 0.5
    elif motif == 2:    # tiles: thin grout lines
        on = ((xx / period) % 1.0 < 0.08) | ((yy / period) % 1.0 < 0.08)
    else:               # diamonds
        on = (((xx + yy) / period) % 1.0 < 0.5) ^ (((xx - yy) / period) % 1.0 < 0.5)
    img = img * (1 - contrast * on[..., None])
    return np.clip(img, 0, 255).astype(np.float32)


FURNITURE = ("cabinet", "shelf", "frame", "plant", "lamp", "window", "table")


def _furnish(rng, img: np.ndarray, horizon: float, cx: float, u: float):
    """Draw 3-6 seeded furniture-like blocks into img in place: on the floor line or hung on the wall."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(3, 7))):
        kind = FURNITURE[rng.integers(len(FURNITURE))]
        x = rng.uniform(-0.1, 1.1) * w
        col = np.clip(_hsv_colour(rng, (0.05, 0.5), (0.2, 0.85)), 0, 255)
        dark = tuple(float(v) for v in col * 0.7)
        c = tuple(float(v) for v in col)
        floor = horizon + rng.uniform(0.0, 0.04) * u         # where its feet stand
        if kind in ("cabinet", "shelf"):
            bw, bh = rng.uniform(0.12, 0.3) * u, rng.uniform(0.2, 0.55) * u
            _rect(img, x, floor - bh, x + bw, floor, c)
            _rect(img, x + bw, floor - bh + 0.02 * u, x + bw + 0.03 * u, floor, dark)    # side face
            for k in range(1, int(rng.integers(2, 5))):
                yk = floor - bh * k / 4
                _rect(img, x + 0.01 * u, yk - 0.006 * u, x + bw - 0.01 * u, yk, dark)    # shelves / drawers
        elif kind == "frame":
            fw, fh = rng.uniform(0.08, 0.2) * u, rng.uniform(0.08, 0.2) * u
            y0 = horizon - rng.uniform(0.35, 0.7) * u
            _rect(img, x, y0, x + fw, y0 + fh, dark)
            art = tuple(float(v) for v in np.clip(_hsv_colour(rng, (0.2, 0.9), (0.4, 1.0)), 0, 255))
            _rect(img, x + 0.012 * u, y0 + 0.012 * u, x + fw - 0.012 * u, y0 + fh - 0.012 * u, art)
        elif kind == "plant":
            pw = rng.uniform(0.04, 0.07) * u
            pot = np.array([(x - pw, floor - 1.4 * pw), (x + pw, floor - 1.4 * pw), (x + 0.7 * pw, floor),
                            (x - 0.7 * pw, floor)])
            _poly(img, pot, c)
            leaf = tuple(float(v) for v in _hsv_colour(rng, (0.4, 0.8), (0.25, 0.6), (80, 150)))
            for _ in range(int(rng.integers(3, 7))):
                lc = (x + rng.uniform(-2, 2) * pw, floor - 1.4 * pw - rng.uniform(0.5, 3) * pw)
                _ellipse(img, lc, (rng.uniform(0.5, 1.3) * pw, rng.uniform(0.3, 0.7) * pw), rng.uniform(0, 180), leaf)
        elif kind == "lamp":
            lh = rng.uniform(0.45, 0.75) * u
            _rect(img, x - 0.005 * u, floor - lh, x + 0.005 * u, floor, dark)
            _rect(img, x - 0.04 * u, floor - 0.01 * u, x + 0.04 * u, floor, dark)
            top = floor - lh
            _poly(img, np.array([(x - 0.03 * u, top - 0.06 * u), (x + 0.03 * u, top - 0.06 * u),
                                 (x + 0.06 * u, top + 0.01 * u), (x - 0.06 * u, top + 0.01 * u)]),
                  tuple(float(v) for v in np.clip(col * 1.3 + 40, 0, 255)))
        elif kind == "window":
            ww, wh = rng.uniform(0.15, 0.3) * u, rng.uniform(0.2, 0.4) * u
            y0 = horizon - rng.uniform(0.45, 0.8) * u
            _rect(img, x, y0, x + ww, y0 + wh, (235.0, 240.0, 245.0))
            _rect(img, x + ww / 2 - 0.006 * u, y0, x + ww / 2 + 0.006 * u, y0 + wh, dark)
            _rect(img, x, y0 + wh / 2 - 0.006 * u, x + ww, y0 + wh / 2 + 0.006 * u, dark)
        else:  # table
            tw, th = rng.uniform(0.15, 0.3) * u, rng.uniform(0.15, 0.25) * u
            _rect(img, x, floor - th, x + tw, floor - th + 0.02 * u, c)
            for lx in (x + 0.01 * u, x + tw - 0.025 * u):
                _rect(img, lx, floor - th, lx + 0.015 * u, floor, dark)
