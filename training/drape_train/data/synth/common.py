"""Constants, the Sample record and the helpers every part of the renderer shares: seeded RNGs, pixel grids,
boxes and masks, curves, colours, the thin-plate spline and raster primitives."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

GENERATOR_VERSION = "synth-2"

LIP_LABELS = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks", "Pants",
    "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
    "Right-shoe",
)
# The LIP visualisation palette (also the palette of VITON-HD image-parse PNGs), RGB.
LIP_PALETTE = np.array([
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85), (0, 119, 221),
    (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255), (51, 170, 221),
    (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
], np.uint8)

BACKGROUND, HAIR, SUNGLASSES, UPPER, DRESS, PANTS, SKIRT, FACE = 0, 2, 4, 5, 6, 9, 12, 13
LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_SHOE, RIGHT_SHOE = 14, 15, 16, 17, 18, 19
NECK_LABEL = FACE
GARMENT_LABELS = (UPPER, DRESS)
GARMENT_TYPES = ("t-shirt", "long-sleeve", "tank-top", "dress")
TEXTURES = ("solid", "stripes", "checks", "dots", "gradient")
PRINTS = ("letters", "shapes", "badge")          # a chest graphic on some garments, over any texture
BACKGROUNDS = ("flat", "gradient", "textured", "studio", "cluttered")
FLOW_INVALID = -2.0  # outside [-1, 1]: grid_sample(padding_mode="zeros") reads 0 there

KEYPOINT_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee", "RAnkle",
    "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)

SKIN_TONES = np.array([(250, 222, 198), (238, 196, 170), (222, 172, 138), (196, 136, 100), (160, 104, 74),
                       (120, 78, 54), (86, 58, 42)], np.float32)
HAIR_COLOURS = np.array([(24, 18, 16), (48, 32, 24), (86, 56, 36), (140, 98, 58), (206, 170, 112),
                         (124, 52, 28), (160, 158, 154)], np.float32)


@dataclass
class Sample:
    """One rendered person wearing one garment, with exact annotations (conventions: the package docstring)."""

    image: np.ndarray          # uint8 [H,W,3] RGB person
    parse: np.ndarray          # uint8 [H,W] LIP ids
    cloth: np.ndarray          # uint8 [H,W,3] RGB still product image
    cloth_mask: np.ndarray     # uint8 [H,W] 0/255
    garment_mask: np.ndarray   # uint8 [H,W] 0/255, == parse in GARMENT_LABELS
    flow: np.ndarray           # float32 [H,W,2] grid_sample grid person -> cloth, FLOW_INVALID elsewhere
    keypoints: np.ndarray      # float32 [18,3] OpenPose COCO-18 (x, y, confidence), pixels
    garment_type: str
    garment_rgb: tuple         # main colour of the garment, RGB ints
    shading: np.ndarray        # float32 [H,W] multiplicative shading, image ~= albedo * shading
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- small helpers

def _rng(seed) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), cached per resolution; crops are views into it."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _box(points, pad: float, h: int, w: int) -> tuple[int, int, int, int]:
    """Integer bounding box (y0, y1, x0, x1) of points, padded, clipped to the image."""
    p = np.asarray(points, np.float32).reshape(-1, 2)
    x0, y0 = np.floor(p.min(0) - pad).astype(int)
    x1, y1 = np.ceil(p.max(0) + pad).astype(int) + 1
    return max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)


def _crop(box, *arrays):
    y0, y1, x0, x1 = box
    return [a[y0:y1, x0:x1] for a in arrays]


def _poly_mask(box, *polys) -> np.ndarray:
    """Boolean mask of the union of polygons (pixel coords) inside box; 1/16 px vertex precision."""
    y0, y1, x0, x1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for p in polys:  # one call each: a single fillPoly call XORs overlapping contours
        cv2.fillPoly(m, [np.round((np.asarray(p, np.float32) - (x0, y0)) * 16).astype(np.int32)], 1, cv2.LINE_8,
                     shift=4)
    return m.view(bool)


def _ellipse_mask(box, centre, axes, angle: float = 0.0) -> np.ndarray:
    y0, y1, x0, x1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    c = (int(round((centre[0] - x0) * 16)), int(round((centre[1] - y0) * 16)))
    a = (max(int(round(axes[0] * 16)), 1), max(int(round(axes[1] * 16)), 1))
    cv2.ellipse(m, c, a, angle, 0, 360, 1, -1, cv2.LINE_8, shift=4)
    return m.view(bool)


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier through control p1: necklines and armholes are curves, not corners."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2).astype(np.float32)


def _hsv_colour(rng, s_range=(0.35, 0.9), v_range=(0.3, 0.95), h_range=(0, 360)) -> np.ndarray:
    """Random RGB colour drawn in HSV so saturation/brightness stay in a plausible band."""
    h = rng.uniform(*h_range)
    s, v = rng.uniform(*s_range), rng.uniform(*v_range)
    hsv = np.array([[[h, s, v]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] * 255.0


# ----------------------------------------------------------------------------------------------- thin-plate spline

def tps_fit(src: np.ndarray, dst: np.ndarray, reg: float = 1e-6) -> np.ndarray:
    """Thin-plate spline through src[i] -> dst[i] ([N,2] each); returns [N+3, 2] coefficients (kernel, affine)."""
    n = len(src)
    d2 = ((src[:, None] - src[None]) ** 2).sum(-1)
    k = d2 * np.log(d2 + 1e-12) + reg * np.eye(n)
    p = np.concatenate([np.ones((n, 1)), src], 1)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    b = np.zeros((n + 3, 2))
    b[:n] = dst
    # cv2's LU rather than np.linalg.solve: a ~20x20 system is all overhead, and waking BLAS worker threads for it
    # cost milliseconds per call on a busy machine
    ok, coef = cv2.solve(a, b, flags=cv2.DECOMP_LU)
    if not ok:
        raise np.linalg.LinAlgError("TPS system is singular: two control points coincide")
    return coef


def tps_eval(coef: np.ndarray, src: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a fitted TPS at points (x, y) of any shape."""
    pts = np.stack([x.ravel(), y.ravel()], 1).astype(np.float64)
    d2 = ((pts[:, None] - src[None]) ** 2).sum(-1)
    u = d2 * np.log(d2 + 1e-12)
    out = u @ coef[:-3] + coef[-3] + pts @ coef[-2:]
    return out[:, 0].reshape(x.shape), out[:, 1].reshape(x.shape)


def _tps_map(src_px, dst_px, box, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense TPS map over box from person pixels to cloth pixels.

    The spline is smooth, so it is evaluated every scale/128 pixels and upsampled with cv2.resize, at sample
    positions matching resize's pixel-centre convention; the dense map is what renders, so the GT stays exact.
    """
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    coef = tps_fit(src_px / scale, dst_px / scale)
    step = max(1, int(round(scale / 128)))
    gh, gw = max(2, -(-h // step)), max(2, -(-w // step))
    gx = x0 + (np.arange(gw, dtype=np.float64) + 0.5) * w / gw - 0.5
    gy = y0 + (np.arange(gh, dtype=np.float64) + 0.5) * h / gh - 0.5
    mx, my = tps_eval(coef, src_px / scale, *np.meshgrid(gx / scale, gy / scale))
    mx, my = (mx * scale).astype(np.float32), (my * scale).astype(np.float32)
    if (gh, gw) != (h, w):
        mx = cv2.resize(mx, (w, h), interpolation=cv2.INTER_LINEAR)
        my = cv2.resize(my, (w, h), interpolation=cv2.INTER_LINEAR)
    return mx, my


# ----------------------------------------------------------------------------------------------- raster primitives

def _rect(img, x0, y0, x1, y1, colour):
    _poly(img, np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), colour)


def _poly(img, pts, colour):
    cv2.fillPoly(img, [np.round(np.asarray(pts) * 16).astype(np.int32)], colour, cv2.LINE_8, shift=4)


def _ellipse(img, centre, axes, angle, colour):
    c = (int(round(centre[0] * 16)), int(round(centre[1] * 16)))
    a = (max(int(round(axes[0] * 16)), 1), max(int(round(axes[1] * 16)), 1))
    cv2.ellipse(img, c, a, angle, 0, 360, colour, -1, cv2.LINE_8, shift=4)
