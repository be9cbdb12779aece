"""Colour science for every stage: sRGB <-> linear RGB <-> XYZ <-> CIELAB, Delta E 76 / 2000.

The one colour module: training's losses (torch) and metrics, evaluation, the prober and the serving postprocess
all use it. Torch-free: torch is used only when a tensor is passed in. Serving's hot path (the recolor keep-gate
and fallback, per request) takes the OpenCV float32 conversions ``rgb_to_lab_f32`` / ``lab_to_rgb_f32``, which
the tests hold to this module's reference formulas (0.15 CIE76 apart on average).

Why one implementation for both backends: the recolor network is trained on a colour difference (torch) and
judged on one (numpy); writing each formula once means the loss and the metric cannot drift apart. Every public
function takes a numpy array (computed in float64) or a torch tensor (its dtype and device are kept, and the
result is differentiable) and returns the same kind.

Conventions
  * Channels are the last axis by default ([..., 3]); pass dim=1 for NCHW tensors.
  * sRGB values are floats in [0, 1]; a numpy uint8 array is read as 0..255 for convenience.
  * IEC 61966-2-1 sRGB, D65 reference white, CIE 1976 L*a*b*. The RGB->XYZ matrix is the one derived from the
    sRGB primaries and D65 (Lindbloom); the white point is its row sums (0.95047, 1.00000, 1.08883), so sRGB
    white maps to exactly L*=100, a*=b*=0. skimage.color.rgb2lab and kornia.color.rgb_to_lab use a 6-digit
    rounding of the same matrix (agreement within ~0.01 L*a*b* units; tests cross-check both).
  * CIEDE2000 follows Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
    supplementary test data, and mathematical observations", Color Res. Appl. 30(1); tests use its 34 pairs.

Differentiability: sqrt and atan2 have no finite derivative at 0 (identical or achromatic colours), so both go
through guarded versions that substitute a harmless argument and report a zero gradient there; branch-selected
powers (sRGB gamma, the CIELAB cube root) clamp their argument to their own branch, so the branch torch.where
discards never produces NaN gradients either.
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["M_RGB_TO_XYZ", "M_XYZ_TO_RGB", "WHITE_D65", "delta_e_2000", "delta_e_76", "lab_to_rgb", "lab_to_xyz",
           "linear_to_srgb", "linear_to_xyz", "rgb_to_lab", "srgb_to_linear", "xyz_to_lab", "xyz_to_linear",
           "rgb_to_lab_f32", "lab_to_rgb_f32"]

M_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
M_XYZ_TO_RGB = np.linalg.inv(M_RGB_TO_XYZ)
WHITE_D65 = M_RGB_TO_XYZ.sum(1)            # (0.95047, 1.0000001, 1.08883): XYZ of sRGB (1, 1, 1)
_EPS = 216.0 / 24389.0                     # CIE's exact rationals for the L* knee
_KAPPA = 24389.0 / 27.0


# ----------------------------------------------------------------------------------------------- backend shim

def _torch_module(x):
    """torch if x is a tensor (never imports torch for numpy callers), else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


class _Ops:
    """The handful of elementwise functions whose names differ between numpy and torch."""

    def __init__(self, x):
        t = _torch_module(x)
        self.t = t
        self.where = t.where if t else np.where
        self.sqrt_raw = t.sqrt if t else np.sqrt
        self.atan2_raw = t.atan2 if t else np.arctan2
        self.cos, self.sin, self.exp = (t.cos, t.sin, t.exp) if t else (np.cos, np.sin, np.exp)

    def asarray(self, x):
        """numpy inputs become float64 (uint8 read as 0..255 -> /255 happens in the callers that expect sRGB)."""
        return x if self.t else np.asarray(x, np.float64)

    def hue_tol(self, like) -> float:
        """Degrees within which |h1 - h2| counts as exactly 180: rounding must not flip CIEDE2000's hue branch for
        exact antipodes (Sharma's pairs 13-15 test precisely that case)."""
        if self.t is None or like.dtype == self.t.float64:
            return 1e-9
        return 1e-3

    def const(self, like, arr):
        return self.t.as_tensor(arr, dtype=like.dtype, device=like.device) if self.t else arr

    def clamp_min(self, x, v):
        return x.clamp_min(v) if self.t else np.maximum(x, v)

    def stack(self, xs):
        return self.t.stack(xs, -1) if self.t else np.stack(xs, -1)

    def sqrt(self, x):
        """sqrt with a zero (not infinite) gradient at 0: the argument is swapped for 1 where it is not > 0."""
        pos = x > 0
        return self.where(pos, self.sqrt_raw(self.where(pos, x, 1.0)), 0.0)

    def atan2(self, y, x):
        """atan2 that is 0 at (0, 0) with a zero gradient there (torch's own gradient is NaN at the origin)."""
        origin = (y == 0) & (x == 0)
        return self.where(origin, 0.0, self.atan2_raw(self.where(origin, 0.0, y), self.where(origin, 1.0, x)))


def _last(x, dim: int, ops: _Ops):
    """Move the channel axis to the end and check it has 3 entries."""
    x = ops.asarray(x)
    if x.ndim == 0 or x.shape[dim] != 3:
        raise ValueError(f"expected 3 colour channels on axis {dim}, got shape {tuple(x.shape)}")
    return x.movedim(dim, -1) if ops.t else np.moveaxis(x, dim, -1)


def _back(x, dim: int, ops: _Ops):
    return x.movedim(-1, dim) if ops.t else np.moveaxis(x, -1, dim)


def _split(x):
    return x[..., 0], x[..., 1], x[..., 2]


def _as_srgb(x, ops: _Ops):
    """numpy uint8 -> [0, 1]; everything else is taken as already in [0, 1]."""
    if ops.t is None and np.asarray(x).dtype == np.uint8:
        return np.asarray(x, np.float64) / 255.0
    return ops.asarray(x)


# ----------------------------------------------------------------------------------------------- conversions

def srgb_to_linear(x):
    """sRGB transfer function removed (IEC 61966-2-1): linear light in [0, 1]."""
    ops = _Ops(x)
    x = _as_srgb(x, ops)
    return ops.where(x <= 0.04045, x / 12.92, ((ops.clamp_min(x, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """Linear light -> sRGB-encoded values (not clipped)."""
    ops = _Ops(x)
    x = ops.asarray(x)
    return ops.where(x <= 0.0031308, 12.92 * x, 1.055 * ops.clamp_min(x, 0.0031308) ** (1 / 2.4) - 0.055)


def linear_to_xyz(rgb, dim: int = -1):
    """Linear sRGB -> CIE XYZ (D65, Y of white = 1)."""
    ops = _Ops(rgb)
    x = _last(rgb, dim, ops)
    return _back(x @ ops.const(x, M_RGB_TO_XYZ.T), dim, ops)


def xyz_to_linear(xyz, dim: int = -1):
    """CIE XYZ (D65) -> linear sRGB (not clipped: out-of-gamut colours leave [0, 1])."""
    ops = _Ops(xyz)
    x = _last(xyz, dim, ops)
    return _back(x @ ops.const(x, M_XYZ_TO_RGB.T), dim, ops)


def xyz_to_lab(xyz, dim: int = -1):
    """CIE XYZ -> CIELAB relative to D65."""
    ops = _Ops(xyz)
    x = _last(xyz, dim, ops)
    t = x / ops.const(x, WHITE_D65)
    f = ops.where(t > _EPS, ops.clamp_min(t, _EPS) ** (1 / 3), (_KAPPA * t + 16) / 116)
    fx, fy, fz = _split(f)
    return _back(ops.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)]), dim, ops)


def lab_to_xyz(lab, dim: int = -1):
    """CIELAB (D65) -> CIE XYZ."""
    ops = _Ops(lab)
    x = _last(lab, dim, ops)
    L, a, b = _split(x)
    fy = (L + 16) / 116
    f = ops.stack([fy + a / 500, fy, fy - b / 200])
    t = ops.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA)
    return _back(t * ops.const(x, WHITE_D65), dim, ops)


def rgb_to_lab(rgb, dim: int = -1):
    """sRGB in [0, 1] (numpy uint8: 0..255) -> CIELAB D65. L* in [0, 100]."""
    ops = _Ops(rgb)
    return xyz_to_lab(linear_to_xyz(srgb_to_linear(_as_srgb(rgb, ops)), dim), dim)


def lab_to_rgb(lab, dim: int = -1, clip: bool = True):
    """CIELAB D65 -> sRGB in [0, 1]; clip=False keeps out-of-gamut values (useful to test round trips)."""
    ops = _Ops(lab)
    out = linear_to_srgb(xyz_to_linear(lab_to_xyz(lab, dim), dim))
    if clip:
        out = out.clamp(0, 1) if ops.t else np.clip(out, 0, 1)
    return out


# ----------------------------------------------------------------------------------------------- differences

def delta_e_76(lab1, lab2, dim: int = -1):
    """CIE 1976 colour difference: Euclidean distance in CIELAB. Shape [...] (the channel axis is reduced)."""
    ops = _Ops(lab1)
    d = _last(lab1, dim, ops) - _last(lab2, dim, ops)
    return ops.sqrt((d * d).sum(-1))


def delta_e_2000(lab1, lab2, kL: float = 1.0, kC: float = 1.0, kH: float = 1.0, dim: int = -1):
    """CIEDE2000 colour difference of CIELAB arrays [..., 3] (broadcasting); returns shape [...].

    numpy in -> float64 numpy out (metrics); torch in -> tensor out with gradients (losses).
    """
    ops = _Ops(lab1)
    L1, a1, b1 = _split(_last(lab1, dim, ops))
    L2, a2, b2 = _split(_last(lab2, dim, ops))
    sq, deg = ops.sqrt, 180.0 / np.pi

    c_bar = (sq(a1 * a1 + b1 * b1) + sq(a2 * a2 + b2 * b2)) / 2
    c7 = c_bar ** 7
    g = 0.5 * (1 - sq(c7 / (c7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = sq(a1p * a1p + b1 * b1), sq(a2p * a2p + b2 * b2)
    h1p = (ops.atan2(b1, a1p) * deg) % 360.0
    h2p = (ops.atan2(b2, a2p) * deg) % 360.0

    dLp, dCp = L2 - L1, c2p - c1p
    cc = c1p * c2p
    chromatic = cc != 0
    tol = ops.hue_tol(L1)
    dh = h2p - h1p
    dh = ops.where(dh > 180 + tol, dh - 360, ops.where(dh < -180 - tol, dh + 360, dh))
    dh = ops.where(chromatic, dh, 0.0)
    dHp = 2 * sq(cc) * ops.sin(dh / (2 * deg))

    Lp_bar, Cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    far = abs(h1p - h2p) > 180 + tol
    hp_bar = ops.where(far, ops.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2)
    hp_bar = ops.where(chromatic, hp_bar, hsum)

    r = 1.0 / deg
    t = (1 - 0.17 * ops.cos((hp_bar - 30) * r) + 0.24 * ops.cos(2 * hp_bar * r)
         + 0.32 * ops.cos((3 * hp_bar + 6) * r) - 0.20 * ops.cos((4 * hp_bar - 63) * r))
    d_theta = 30 * ops.exp(-(((hp_bar - 275) / 25) ** 2))
    cp7 = Cp_bar ** 7
    r_c = 2 * sq(cp7 / (cp7 + 25.0 ** 7))
    l50 = (Lp_bar - 50) ** 2
    s_l = 1 + 0.015 * l50 / ops.sqrt_raw(20 + l50)
    s_c = 1 + 0.045 * Cp_bar
    s_h = 1 + 0.015 * Cp_bar * t
    r_t = -ops.sin(2 * d_theta * r) * r_c

    tl, tc, th = dLp / (kL * s_l), dCp / (kC * s_c), dHp / (kH * s_h)
    return sq(tl * tl + tc * tc + th * th + r_t * tc * th)


# ------------------------------------------------------------------------------------- serving's float32 path

def rgb_to_lab_f32(rgb: np.ndarray) -> np.ndarray:
    """sRGB float32 ``[..., 3]`` in [0, 1] -> CIELAB float32 by OpenCV, what serving's keep-gate and fallback use
    (their thresholds were tuned on it). OpenCV's float path tabulates the sRGB curve: on uniform random colours it
    is 0.15 CIE76 from ``rgb_to_lab`` on average and 0.67 at worst (darkest blues), which tests/test_color.py
    holds it to. Pass values already in [0, 1]."""
    import cv2

    a = np.ascontiguousarray(rgb, dtype=np.float32)
    return cv2.cvtColor(a.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(a.shape)


def lab_to_rgb_f32(lab: np.ndarray) -> np.ndarray:
    """CIELAB float32 ``[..., 3]`` -> sRGB float32 by OpenCV (not clipped to [0, 1]); the inverse of
    ``rgb_to_lab_f32``."""
    import cv2

    a = np.ascontiguousarray(lab, dtype=np.float32)
    return cv2.cvtColor(a.reshape(-1, 1, 3), cv2.COLOR_Lab2RGB).reshape(a.shape)
