"""Seeded procedural try-on data: a flat-shaded studio person wearing a warped flat garment.

Why a renderer at all: every stage downstream (parsing, GMM, TOM, recolor, export, serving) can be trained and
tested end to end on data whose ground truth is exact -- parsing, keypoints, the dense cloth->person warp and a
real try-on target (the same person rendered in another garment) -- before real VITON-HD data is at hand.

Looks (all seeded, all drawn in body units)
  * Garments: t-shirt, long sleeve, tank top, dress; fabric solid, stripes, checks, dots or a smooth two-colour
    gradient; about a third carry a chest print (letters, simple shapes, or a badge with knocked-out letters) in a
    third colour. On the body, 2-4 soft fold streaks (drag lines from the armpits, vertical drapes, bunching at the
    hem) darken the garment; they live in `shading`, so the still stays flat and image = warped still x shading.
  * Backgrounds (BACKGROUNDS): flat, gradient (linear or vignette), textured (soft blotches + a faint wallpaper
    motif), studio (wall + floor), cluttered (the studio with furniture-like blocks: cabinets, shelves, frames,
    plants, lamps, windows, tables; slightly out of focus). Backgrounds are albedo only: the parse stays 0.

Conventions
  * Images are RGB uint8. Geometry is in body units (fractions of the person's height), so every resolution
    renders the same scene; only rasterisation differs.
  * Left/right are anatomical, as in LIP and OpenPose: the person faces the camera, so their right side is on
    the image left. Left-arm (14) / Left-leg (16) / Left-shoe (18) are on the image right.
  * Skin that is not a limb or the face (neck, chest bared by a neckline) is labelled Face (13, NECK_LABEL);
    bare shoulders next to a strap are labelled as the arm on that side, as LIP annotators do. Real VITON-HD
    "image-parse-v3" maps marks the neck with 10 instead; change NECK_LABEL if that convention is wanted.
  * The image is albedo * shading. Shading is multiplicative (cylinder falloff towards silhouettes), so the
    garment colour is recoverable as image / shading; `Sample.shading` holds it.
  * `flow` is the grid_sample(align_corners=False) grid from person pixels into the cloth image: x then y in
    [-1, 1]; FLOW_INVALID where no garment is visible.

Everything is numpy + OpenCV and vectorised: polygons go through cv2.fillPoly, the garment through cv2.remap,
and per-pixel maths only ever runs over a layer's bounding box.
"""
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
    """One rendered person wearing one garment, with exact annotations (see module docstring)."""

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


# ----------------------------------------------------------------------------------------------- limbs

def _chain(box, shape, joints: np.ndarray, side: float):
    """Arc-length parameter along a polyline of joints for every pixel of box.

    Returns (t, d, over, after): t in [0, 1] the arc fraction of the nearest point of the chain, d the signed
    distance to it in pixels (positive on the outer side: image-left for side=+1), over the distance along the
    axis past either end (0 between the ends; it flattens the end caps) and the mask of pixels past the last
    joint (where a hand or shoe takes over). Limbs, sleeves and trouser legs are "pixels with |d| < hw(t)".
    """
    xx, yy = _crop(box, *_grid(*shape))
    lens = np.linalg.norm(np.diff(joints, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    best = None
    for k in range(len(lens)):
        a, u = joints[k], (joints[k + 1] - joints[k]) / lens[k]
        rx, ry = xx - a[0], yy - a[1]
        tk = (rx * u[0] + ry * u[1]) / lens[k]
        tc = np.clip(tk, 0.0, 1.0)
        dist = np.hypot(rx - tc * lens[k] * u[0], ry - tc * lens[k] * u[1])
        sign = np.where(u[0] * ry - u[1] * rx >= 0, side, -side)
        over = np.zeros_like(tk)
        if k == 0:
            over = np.maximum(-tk, 0) * lens[k]
        after = (tk > 1) if k == len(lens) - 1 else np.zeros(tk.shape, bool)
        if k == len(lens) - 1:
            over = np.maximum(over, (tk - 1) * lens[k])
        cand = ((cum[k] + tc * lens[k]) / cum[-1], sign * dist, over, after, dist)
        if best is None:
            best = cand
        else:
            take = cand[4] < best[4]
            best = tuple(np.where(take, c, b) for c, b in zip(cand, best))
    return best[:4]


ARM_WIDTHS = np.array([0.029, 0.021, 0.0165])   # half-widths at shoulder, elbow, wrist (body units)
LEG_WIDTHS = np.array([0.05, 0.034, 0.023])     # at hip joint, knee, ankle


def _knots(joints: np.ndarray) -> np.ndarray:
    """Arc fraction of each joint: widths are given per joint and interpolated along t."""
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(joints, axis=0), axis=1))])
    return cum / cum[-1]


# ----------------------------------------------------------------------------------------------- the person

@dataclass
class Person:
    """Identity, pose, lower body and background; everything a pair shares. All lengths in pixels."""

    h: int
    w: int
    u: float                   # pixels per body unit (person height)
    cx: float
    y: dict                    # named heights (pixels)
    x: dict                    # named half-widths (pixels)
    arms: dict                 # side -> [shoulder, elbow, wrist] joints
    legs: dict                 # side -> [hip, knee, ankle]
    skin: np.ndarray
    hair_rgb: np.ndarray
    hair: str
    lower: str                 # "pants" | "skirt"
    lower_rgb: np.ndarray
    shoe_rgb: np.ndarray
    sunglasses: bool
    background: tuple          # (albedo [H,W,3] float32, shade [H,W] float32, kind: one of BACKGROUNDS)
    keypoints: np.ndarray
    pose: str                  # arm poses "right/left": down, front (forearm across the torso), out, hip
    shading_k: float           # depth of the cylinder shading

    def torso_hw(self, yv):
        """Half-width of the bare torso at heights yv (pixels): shoulders -> chest -> waist -> hips."""
        ys = [self.y["shoulder"], self.y["armpit"], self.y["waist"], self.y["hip"], self.y["hip"] + 0.4 * self.u]
        ws = [self.x["shoulder"], self.x["chest"], self.x["waist"], self.x["hip"], self.x["hip"] * 1.08]
        return np.interp(yv, ys, ws)


def _sample_person(rng: np.random.Generator, h: int, w: int) -> Person:
    u = h * rng.uniform(0.9, 0.95)
    top = h * 0.025 + rng.uniform(0, 1) * (h * 0.97 - 0.975 * u - h * 0.025)
    cx = w / 2 + rng.uniform(-0.02, 0.02) * u
    tl = rng.uniform(0.94, 1.06)                     # torso length
    hs = rng.uniform(0.94, 1.06)                     # head size
    Y = lambda v: top + v * u                        # noqa: E731
    ry = 0.064 * hs
    y_sh = 0.058 + 2 * ry + 0.05                     # top of head, head, neck
    y = {
        "head": Y(0.058 + ry), "head_ry": ry * u, "head_rx": 0.049 * hs * u,
        "shoulder": Y(y_sh), "armpit": Y(y_sh + 0.085 * tl), "waist": Y(y_sh + 0.18 * tl),
        "hip": Y(y_sh + 0.275 * tl), "ankle": Y(0.915), "ground": Y(0.965),
    }
    y["neck"] = y["shoulder"] - 0.016 * u
    y["chin"] = y["head"] + y["head_ry"]
    sw = rng.uniform(0.088, 0.115)
    hw = rng.uniform(0.078, 0.1)
    x = {"shoulder": sw * u, "chest": sw * rng.uniform(0.8, 0.88) * u, "waist": rng.uniform(0.064, 0.08) * u,
         "hip": hw * u, "neck": rng.uniform(0.019, 0.024) * u}
    x["waist"] = min(x["waist"], x["chest"] * 0.95, x["hip"] * 0.95)

    # Arms: angles from straight down, positive = away from the body. A bent-in forearm crosses the torso.
    poses = ("down", "down", "front", "out", "hip")
    arms, pose_names = {}, []
    al = rng.uniform(0.95, 1.05)
    for side, sgn in (("R", -1.0), ("L", 1.0)):
        pose = poses[rng.integers(len(poses))]
        pose_names.append(pose)
        if pose == "down":
            a1, a2 = rng.uniform(4, 16), rng.uniform(-4, 18)
        elif pose == "front":
            a1, a2 = rng.uniform(4, 16), -rng.uniform(80, 118)
        elif pose == "out":
            a1, a2 = rng.uniform(28, 52), rng.uniform(0, 35)
        else:  # hand on hip
            a1, a2 = rng.uniform(28, 40), -rng.uniform(40, 65)
        a2 = a1 + a2 if pose in ("down", "out") else a2
        d1 = np.array([sgn * np.sin(np.radians(a1)), np.cos(np.radians(a1))])
        d2 = np.array([sgn * np.sin(np.radians(a2)), np.cos(np.radians(a2))])
        shoulder = np.array([cx + sgn * (x["shoulder"] - 0.024 * u), y["shoulder"] + 0.024 * u])
        elbow = shoulder + d1 * 0.15 * al * u
        wrist = elbow + d2 * 0.135 * al * u
        arms[side] = np.stack([shoulder, elbow, wrist]).astype(np.float32)

    legs = {}
    stance = rng.uniform(-0.005, 0.035)
    for side, sgn in (("R", -1.0), ("L", 1.0)):
        hip = np.array([cx + sgn * x["hip"] * 0.5, y["hip"] - 0.01 * u])
        ankle = np.array([cx + sgn * (x["hip"] * 0.5 + stance * u), y["ankle"]])
        knee = (hip + ankle) / 2 + (sgn * rng.uniform(-0.004, 0.006) * u, 0)
        legs[side] = np.stack([hip, knee, ankle]).astype(np.float32)

    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.94, 1.04, 3)
    hair_rgb = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    lower = "pants" if rng.random() < 0.65 else "skirt"
    lower_rgb = (_hsv_colour(rng, (0.05, 0.6), (0.12, 0.6)) if rng.random() < 0.7
                 else np.array([52, 70, 110], np.float32) * rng.uniform(0.7, 1.3))  # denim-ish
    shoe_rgb = (np.full(3, rng.choice([28.0, 235.0, 120.0])) * rng.uniform(0.9, 1.05, 3))
    hair = ("short", "long", "long_front", "bun")[rng.integers(4)]
    y["skirt_hem"] = y["hip"] + rng.uniform(0.09, 0.24) * u

    person = Person(h=h, w=w, u=u, cx=cx, y=y, x=x, arms=arms, legs=legs, skin=np.clip(skin, 0, 255),
                    hair_rgb=np.clip(hair_rgb, 0, 255), hair=hair, lower=lower, lower_rgb=np.clip(lower_rgb, 0, 255),
                    shoe_rgb=np.clip(shoe_rgb, 0, 255), sunglasses=bool(rng.random() < 0.1),
                    background=_background(rng, h, w, cx, y["ground"], u), keypoints=np.zeros((18, 3), np.float32),
                    pose="/".join(pose_names), shading_k=rng.uniform(0.22, 0.34))
    person.keypoints = _keypoints(person, rng)
    return person


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


def _rect(img, x0, y0, x1, y1, colour):
    _poly(img, np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), colour)


def _poly(img, pts, colour):
    cv2.fillPoly(img, [np.round(np.asarray(pts) * 16).astype(np.int32)], colour, cv2.LINE_8, shift=4)


def _ellipse(img, centre, axes, angle, colour):
    c = (int(round(centre[0] * 16)), int(round(centre[1] * 16)))
    a = (max(int(round(axes[0] * 16)), 1), max(int(round(axes[1] * 16)), 1))
    cv2.ellipse(img, c, a, angle, 0, 360, colour, -1, cv2.LINE_8, shift=4)


def _keypoints(p: Person, rng) -> np.ndarray:
    """OpenPose COCO-18 from the skeleton; confidences look like a detector's (0.7-1.0)."""
    hx, hy, rx, ry = p.cx, p.y["head"], p.y["head_rx"], p.y["head_ry"]
    eye_y = hy - 0.04 * ry
    pts = [
        (hx, hy + 0.22 * ry), ((p.arms["R"][1][0] + p.arms["L"][1][0]) / 2, p.arms["R"][1][1]),
        *p.arms["R"], *p.arms["L"], *p.legs["R"], *p.legs["L"],
        (hx - 0.38 * rx, eye_y), (hx + 0.38 * rx, eye_y), (hx - 0.97 * rx, hy), (hx + 0.97 * rx, hy),
    ]
    kp = np.zeros((18, 3), np.float32)
    kp[:, :2] = np.asarray(pts, np.float32)
    kp[:, 2] = rng.uniform(0.7, 1.0, 18)
    return kp


# ----------------------------------------------------------------------------------------------- garments

@dataclass
class Garment:
    """A flat garment: template polygons in body units (origin = neck centre, x right, y down) and its look."""

    kind: str
    label: int
    pts: dict                  # named template control points, body units
    polys: dict                # part -> polygon (body units): "front", "back" (inside of neck), "sleeve_R", ...
    neckline: np.ndarray       # front neckline polyline (body units), gets a darker band
    texture: str               # one of TEXTURES
    rgb: np.ndarray            # main colour
    rgb2: np.ndarray           # pattern colour (the far end of a gradient)
    tex_params: dict
    print_kind: str            # "none" or one of PRINTS
    print_params: dict         # box (template units), text, shapes, font
    rgb3: np.ndarray           # print colour
    folds: np.ndarray          # [N, 6] fold streaks x0, y0, x1, y1, width, depth (template units); on-body only
    sleeve_len: float          # fraction of the arm chain covered by a sleeve (0 = sleeveless)
    ease: float                # on-body width / body width
    hem_y: float               # on-body hem height relative to the hip, body units
    flare: float               # on-body hem half-width relative to the hip half-width (dress)


def _sample_garment(rng, lower: str, kind: str | None = None) -> Garment:
    """Template (outline + sleeve quads with named control points) and look of a random upper garment.

    A dress is cut longer over pants (a tunic) and reaches past the skirt over a skirt.
    """
    kind = kind or GARMENT_TYPES[rng.integers(len(GARMENT_TYPES))]
    P = lambda x, y: np.array([x, y], np.float32)  # noqa: E731
    w = rng.uniform(0.115, 0.14)
    pts, sleeves = {}, {}
    if kind in ("tank-top",) or (kind == "dress" and rng.random() < 0.6):
        nw, strap = rng.uniform(0.04, 0.058), rng.uniform(0.018, 0.035)
        nd = rng.uniform(0.06, 0.11)
        pts["shoulder"] = P(nw + strap, 0.004)
        pts["armpit"] = P(w, rng.uniform(0.12, 0.145))
        pts["armhole"] = P(nw + strap + 0.012, pts["armpit"][1] * 0.75)
        sleeve_len = 0.0
    else:
        nw, nd = rng.uniform(0.034, 0.048), rng.uniform(0.022, 0.06)
        pts["shoulder"] = P(w * rng.uniform(0.9, 0.98), 0.026)
        pts["armpit"] = P(w, 0.026 + rng.uniform(0.1, 0.12))
        # sleeve quad: axis d angled down from the shoulder, cuff perpendicular to it, underarm seam length sl
        if kind == "long-sleeve":
            sl, ang, taper = rng.uniform(0.19, 0.23), rng.uniform(50, 60), rng.uniform(0.65, 0.75)
        else:
            sl, ang, taper = rng.uniform(0.035, 0.07), rng.uniform(28, 42), rng.uniform(0.8, 0.95)
        a = np.radians(ang)
        d = np.array([np.cos(a), np.sin(a)], np.float32)      # left sleeve: right & down
        n = np.array([-np.sin(a), np.cos(a)], np.float32)     # across it, towards the armpit side
        width = float((pts["armpit"] - pts["shoulder"]) @ n)
        end_in = pts["armpit"] + sl * d
        end_out = end_in - n * width * taper
        sleeves = {"top_out": pts["shoulder"], "top_in": pts["armpit"], "end_out": end_out, "end_in": end_in}
        outer = float((end_out - pts["shoulder"]) @ d)
        sleeve_len = 1.0 if kind == "long-sleeve" else min(0.6, (outer + sl) / 2 / 0.29)
    pts["neck"] = P(nw, 0.0)
    pts["neck_c"] = P(0.0, nd)
    if kind == "dress":
        length = rng.uniform(0.48, 0.66)
        fl = rng.uniform(1.25, 1.7)
        pts["waist"] = P(w * rng.uniform(0.82, 0.9), 0.25)
        pts["hip"] = P(w * rng.uniform(0.95, 1.05), 0.34)
        pts["hem"] = P(w * fl, length)
        hem_y = rng.uniform(0.14, 0.3) if lower == "pants" else rng.uniform(0.26, 0.34)
        flare = fl * rng.uniform(0.8, 0.95)
    else:
        length = rng.uniform(0.31, 0.4) if kind != "long-sleeve" else rng.uniform(0.34, 0.42)
        pts["waist"] = P(w * rng.uniform(0.94, 1.0), length * 0.62)
        pts["hem"] = P(w * rng.uniform(0.97, 1.05), length)
        hem_y, flare = rng.uniform(-0.015, 0.045), 1.0
    pts["hem_c"] = P(0.0, length + 0.004)

    mirror = lambda p: p * np.array([-1, 1], np.float32)  # noqa: E731
    side_names = [n for n in ("shoulder", "armhole", "armpit", "waist", "hip", "hem") if n in pts]
    left = [pts[n] for n in side_names]
    neckline = _bezier(pts["neck"], P(0.0, 2 * nd), mirror(pts["neck"]))
    back_neck = _bezier(mirror(pts["neck"]), P(0, 0.018), pts["neck"])[1:-1]
    if "armhole" in pts:  # scoop the armhole between strap and armpit
        i = side_names.index("armhole")
        left[i:i + 1] = list(_bezier(pts["shoulder"], pts["armhole"] + P(0.0, 0.01), pts["armpit"], 8)[1:-1])
    front = [*[mirror(p) for p in left], pts["hem_c"], *left[::-1], *neckline]
    polys = {"front": np.array(front, np.float32),
             "back": np.array([mirror(pts["neck"]), *back_neck, *neckline], np.float32)}
    if sleeves:
        order = ("top_out", "end_out", "end_in", "top_in")
        polys["sleeve_L"] = np.array([sleeves[k] for k in order], np.float32)
        polys["sleeve_R"] = np.array([mirror(sleeves[k]) for k in order], np.float32)
    pts.update({f"sleeve_{k}": v for k, v in sleeves.items()})

    texture = TEXTURES[rng.integers(len(TEXTURES))]
    neutral = rng.random() < 0.25
    rgb = _hsv_colour(rng, (0.02, 0.2) if neutral else (0.35, 0.92), (0.2, 0.95))
    rgb2 = _hsv_colour(rng, (0.0, 0.9), (0.15, 1.0))
    if np.abs(rgb2 - rgb).sum() < 120:  # a pattern must be visible
        rgb2 = np.where(rgb.mean() > 128, rgb * 0.35, np.minimum(rgb + 150, 255))
    tex = {"period": rng.uniform(0.018, 0.05), "duty": rng.uniform(0.3, 0.55), "angle": rng.choice([0, 90, 45, -45]),
           "dot": rng.uniform(0.2, 0.38), "gradient_angle": rng.uniform(0, 360)}
    ease = rng.uniform(1.05, 1.16)
    print_kind, print_params = ("none", {})
    if rng.random() < 0.35:
        print_kind, print_params = _sample_print(rng, pts, w)
    rgb3 = _hsv_colour(rng, (0.0, 0.9), (0.1, 1.0))
    if np.abs(rgb3 - rgb).sum() < 150:
        rgb3 = np.full(3, 245.0 if rgb.mean() < 128 else 20.0, np.float32)
    return Garment(kind=kind, label=DRESS if kind == "dress" else UPPER, pts=pts, polys=polys, neckline=neckline,
                   texture=texture, rgb=rgb.astype(np.float32), rgb2=np.asarray(rgb2, np.float32), tex_params=tex,
                   print_kind=print_kind, print_params=print_params, rgb3=np.asarray(rgb3, np.float32),
                   folds=_sample_folds(rng, pts, w, length), sleeve_len=sleeve_len, ease=ease, hem_y=hem_y,
                   flare=flare)


PRINT_GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ23456789"
PRINT_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX)
PRINT_SHAPES = ("circle", "triangle", "star", "diamond", "bars")


def _sample_print(rng, pts: dict, w: float) -> tuple[str, dict]:
    """A chest graphic: a box (template units) below the neckline, and what goes in it.

    letters: 2-5 glyphs; shapes: 1-3 simple shapes side by side; badge: a filled plate with 1-3 glyphs knocked
    out. One in three is a small left-chest logo, the rest a centred chest print.
    """
    kind = PRINTS[rng.integers(len(PRINTS))]
    small = rng.random() < 0.33
    bw = w * (rng.uniform(0.3, 0.45) if small else rng.uniform(0.8, 1.3))
    bh = bw * (rng.uniform(0.6, 0.9) if small else rng.uniform(0.3, 0.55))
    cx = w * 0.5 if small else w * rng.uniform(-0.1, 0.1)      # the wearer's left chest is the image right
    cy = pts["neck_c"][1] + 0.02 + bh / 2 + rng.uniform(0.0, 0.03)
    n = int(rng.integers(1, 4)) if kind != "letters" else int(rng.integers(2, 6))
    params = {"box": [float(cx - bw / 2), float(cy - bh / 2), float(cx + bw / 2), float(cy + bh / 2)],
              "text": "".join(PRINT_GLYPHS[i] for i in rng.integers(len(PRINT_GLYPHS), size=n)),
              "font": int(rng.integers(len(PRINT_FONTS))),
              "shapes": [PRINT_SHAPES[i] for i in rng.integers(len(PRINT_SHAPES), size=n)],
              "ellipse": bool(rng.random() < 0.5)}
    return kind, params


def _sample_folds(rng, pts: dict, w: float, length: float) -> np.ndarray:
    """2-4 soft fold streaks in template units: drag lines from an armpit, vertical drapes, bunching at the hem."""
    armpit = float(pts["armpit"][1])
    folds = []
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.integers(3)
        if kind == 0:
            side = rng.choice([-1.0, 1.0])
            x0, y0 = side * w * rng.uniform(0.7, 0.95), armpit + rng.uniform(0.0, 0.03)
            a, n = np.radians(rng.uniform(25, 60)), rng.uniform(0.06, 0.14)
            x1, y1 = x0 - side * n * np.sin(a), y0 + n * np.cos(a)
        elif kind == 1:
            x0, y0 = w * rng.uniform(-0.7, 0.7), rng.uniform(armpit, max(armpit, 0.6 * length))
            a, n = np.radians(rng.uniform(-12, 12)), rng.uniform(0.22, 0.7) * length
            x1, y1 = x0 + n * np.sin(a), y0 + n * np.cos(a)
        else:
            x0, y0 = w * rng.uniform(-0.7, 0.3), length - rng.uniform(0.02, 0.08)
            a, n = np.radians(rng.uniform(-12, 12)), rng.uniform(0.04, 0.1)
            x1, y1 = x0 + n * np.cos(a), y0 + n * np.sin(a)
        folds.append((x0, y0, x1, y1, rng.uniform(0.005, 0.013), rng.uniform(0.06, 0.18)))
    return np.array(folds, np.float32)


def fold_shading(folds: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Multiplicative shading (<= 1) of fold streaks at template coordinates (tx, ty).

    Each streak darkens by depth * exp(-(d / width)^2) at distance d from its segment, tapered to 0 at both ends
    (sin profile along it), so folds fade in and out instead of ending in a blunt cap.
    """
    out = np.ones(tx.shape, np.float32)
    for x0, y0, x1, y1, width, depth in folds:
        dx, dy = x1 - x0, y1 - y0
        rx, ry = tx - x0, ty - y0
        t = np.clip((rx * dx + ry * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        d2 = (rx - t * dx) ** 2 + (ry - t * dy) ** 2
        out *= 1.0 - depth * np.sin(np.pi * t) * np.exp(-d2 / (width * width))
    return out


def _garments_differ(a: Garment, b: Garment) -> bool:
    """Garment B of a pair must look different: another main colour, and another type or texture."""
    return np.abs(a.rgb - b.rgb).sum() > 150 and (a.kind != b.kind or a.texture != b.texture)


@dataclass
class Cloth:
    """The still product image of a garment and where the template landed in it."""

    image: np.ndarray          # float32 [H,W,3], garment on the backdrop
    mask: np.ndarray           # uint8 0/255
    albedo: np.ndarray         # float32 [H,W,3], the fabric continued past the outline (halo-free sampling)
    parts: dict                # part -> float32 [H,W] mask, remapped to decide on-body visibility
    origin: np.ndarray         # template (0,0) in cloth pixels
    scale: float               # cloth pixels per body unit

    def px(self, p):
        return np.asarray(p, np.float32) * self.scale + self.origin


PARTS = ("front", "sleeve_R", "sleeve_L")
TONES = np.array([1.0, 0.62, 0.82], np.float32)  # fabric, the inside of the back seen through the neck, neck band


def _pattern(g: Garment, h: int, w: int, scale: float) -> np.ndarray:
    """uint8 [H,W]: 1 where the pattern colour shows. Periods are in body units so patterns scale with the image.

    Built from broadcast row/column vectors rather than full coordinate grids: this runs twice per pair.
    """
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    t, period = g.tex_params, g.tex_params["period"] * scale
    if g.texture in ("solid", "gradient"):
        return np.zeros((h, w), np.uint8)
    if g.texture == "stripes":
        a = np.radians(t["angle"])
        on = ((x * np.float32(np.cos(a)) + y * np.float32(np.sin(a))) / period) % 1.0 < t["duty"]
    elif g.texture == "checks":
        on = ((x // period) % 2).astype(bool) ^ ((y // period) % 2).astype(bool)
    else:  # dots, every other row offset by half a period
        shift = 0.5 * ((y // period) % 2)
        fx = (x / period + shift) % 1.0 - 0.5
        fy = (y / period) % 1.0 - 0.5
        on = fx * fx + fy * fy < t["dot"] ** 2
    return np.broadcast_to(on, (h, w)).view(np.uint8)


def _gradient_weight(g: Garment, h: int, w: int, px) -> np.ndarray:
    """float32 [H,W,1] in [0,1]: position along the gradient direction across the garment's template extent."""
    a = np.radians(g.tex_params["gradient_angle"])
    d = np.array([np.cos(a), np.sin(a)], np.float32)
    proj = px(np.concatenate(list(g.polys.values()))) @ d
    x = np.arange(w, dtype=np.float32)[None, :] * d[0]
    y = np.arange(h, dtype=np.float32)[:, None] * d[1]
    t = np.clip((x + y - proj.min()) / max(float(proj.max() - proj.min()), 1e-6), 0.0, 1.0)
    return (t * t * (3 - 2 * t))[..., None]  # smoothstep: flat ends, like dip-dyed fabric


def _print_mask(g: Garment, h: int, w: int, px) -> np.ndarray:
    """bool [H,W]: the chest print (before clipping to the front panel), drawn at the still's resolution."""
    out = np.zeros((h, w), np.uint8)
    if g.print_kind == "none":
        return out.view(bool)
    pp = g.print_params
    (x0, y0), (x1, y1) = px(np.array(pp["box"], np.float32).reshape(2, 2))
    bw, bh = x1 - x0, y1 - y0
    if g.print_kind == "shapes":
        n = len(pp["shapes"])
        r = min(bw / n, bh) * 0.42
        for k, shape in enumerate(pp["shapes"]):
            c = np.array([x0 + bw * (k + 0.5) / n, y0 + bh / 2], np.float32)
            if shape == "circle":
                _ellipse(out, c, (r, r), 0, 1)
                continue
            if shape == "bars":
                for j in (-1, 0, 1):
                    _poly(out, c + np.array([(-r, j * 0.6 * r - 0.18 * r), (r, j * 0.6 * r - 0.18 * r),
                                             (r, j * 0.6 * r + 0.18 * r), (-r, j * 0.6 * r + 0.18 * r)]), 1)
                continue
            n_pts, inner = {"triangle": (3, 1.0), "diamond": (4, 1.0), "star": (10, 0.45)}[shape]
            ang = np.pi * (np.arange(n_pts) * 2 / n_pts - 0.5)
            rad = np.where(np.arange(n_pts) % 2 == 1, r * inner, r) if shape == "star" else r
            _poly(out, c + np.stack([np.cos(ang), np.sin(ang)], 1) * np.asarray(rad)[..., None], 1)
        return out.view(bool)
    font = PRINT_FONTS[pp["font"]]
    text = pp["text"]
    if g.print_kind == "badge":
        if pp["ellipse"]:
            _ellipse(out, ((x0 + x1) / 2, (y0 + y1) / 2), (bw / 2, bh / 2), 0, 1)
        else:
            _rect(out, x0, y0, x1, y1, 1)
        x0, y0, bw, bh = x0 + 0.18 * bw, y0 + 0.2 * bh, 0.64 * bw, 0.6 * bh
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    fs = min(bw / tw, bh / th)
    thick = max(1, int(round(fs * 1.5)))
    (tw, th), _ = cv2.getTextSize(text, font, fs, thick)
    org = (int(round(x0 + (bw - tw) / 2)), int(round(y0 + (bh + th) / 2)))
    cv2.putText(out, text, org, font, fs, 0 if g.print_kind == "badge" else 1, thick, cv2.LINE_8)
    return out.view(bool)


def _render_cloth(g: Garment, h: int, w: int, rng) -> Cloth:
    """Garment laid flat, centred on a light backdrop, ~85% of the frame like catalogue stills.

    fabric (main / pattern colour, or a gradient between them) x tone (the inside of the back seen through the
    neck, a neckline band), then the chest print on the front panel. `albedo` continues the fabric past the
    outline so on-body sampling near the edges never mixes in the backdrop.
    """
    allp = np.concatenate(list(g.polys.values()))
    lo, hi = allp.min(0), allp.max(0)
    scale = min(0.86 * h / (hi[1] - lo[1]), 0.86 * w / (hi[0] - lo[0]))
    origin = np.array([w / 2, h / 2], np.float32) - scale * (lo + hi) / 2
    px = lambda q: np.asarray(q, np.float32) * scale + origin  # noqa: E731
    full = (0, h, 0, w)
    masks = {k: _poly_mask(full, px(q)) for k, q in g.polys.items()}
    mask = np.zeros((h, w), bool)
    for m in masks.values():
        mask |= m
    trim = np.zeros((h, w), np.uint8)
    cv2.polylines(trim, [np.round(px(g.neckline) * 16).astype(np.int32)], False, 1,
                  max(1, int(round(0.006 * h))), cv2.LINE_8, shift=4)
    tone_idx = np.zeros((h, w), np.uint8)
    inside_back = masks["back"] & ~masks["front"]
    tone_idx[inside_back] = 1
    tone_idx[trim.view(bool) & masks["front"]] = 2
    if g.texture == "gradient":
        fabric = g.rgb + _gradient_weight(g, h, w, px) * (g.rgb2 - g.rgb)
        albedo = fabric * TONES[tone_idx][..., None]
    else:  # one gather from a (tone x colour) palette: 4x faster than colour gather times tone
        palette = (TONES[:, None, None] * np.stack([g.rgb, g.rgb2])[None]).reshape(6, 3)
        albedo = palette[tone_idx * 2 + _pattern(g, h, w, scale)]
    logo = _print_mask(g, h, w, px) & masks["front"] & ~inside_back
    albedo[logo] = g.rgb3 * TONES[tone_idx[logo]][:, None]
    bg = np.clip(rng.uniform(236, 252) + rng.uniform(-3, 3, 3), 0, 255).astype(np.float32)
    image = albedo.copy()
    image[~mask] = bg
    parts = {k: masks[k].astype(np.float32) for k in PARTS if k in masks}
    return Cloth(image=image, mask=mask.astype(np.uint8) * 255, albedo=albedo, parts=parts, origin=origin,
                 scale=scale)


def _sample_cloth(cloth: Cloth, part: str, mx: np.ndarray, my: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Garment colour at cloth coords (mx, my) and where it is visible.

    Visible = all four bilinear taps inside the part, so the rendered colour never mixes in the still's backdrop
    and remapping the still with the GT flow reproduces the person's garment pixels exactly (up to shading).
    """
    rgb = cv2.remap(cloth.albedo, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.remap(cloth.parts[part], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return rgb, alpha > 0.999


def _body_points(g: Garment, p: Person) -> tuple[list[str], np.ndarray]:
    """Where the template's control points sit on this body (pixels): the constraints of the torso TPS.

    Heights go through one monotone piecewise-linear map of template landmarks (neck, shoulder, armpit, waist,
    hip, hem) to body landmarks, so the spline never folds; widths follow the body times the garment's ease.
    """
    u, cx, t = p.u, p.cx, g.pts
    hem = p.y["hip"] + g.hem_y * u
    sleeveless = "armhole" in t
    ty = [0.0, t["shoulder"][1], t["armpit"][1]]
    by = [p.y["neck"], p.y["neck"] + 0.004 * u if sleeveless else p.y["shoulder"] - 0.004 * u,
          p.y["armpit"] + 0.012 * u]
    if g.kind == "dress":
        ty += [t["waist"][1], t["hip"][1], t["hem"][1]]
        by += [p.y["waist"], p.y["hip"], hem]
    else:
        ty += [t["hem"][1]]
        by += [hem]
    ymap = lambda v: float(np.interp(v, ty, by))  # noqa: E731
    ease = lambda yv: float(p.torso_hw(yv)) * g.ease + 0.004 * u  # noqa: E731
    nw_body = p.x["neck"] * 1.15 + (t["neck"][0] - 0.04) * u * 0.8

    side = {"neck": nw_body, "armpit": None, "waist": None, "hip": None, "hem": None}
    side["shoulder"] = nw_body + (t["shoulder"][0] - t["neck"][0]) * u * 0.9 if sleeveless \
        else p.x["shoulder"] + 0.008 * u
    if g.kind == "dress":
        side["hem"] = p.x["hip"] * g.ease * g.flare
    names, pts = [], []
    for name, xv in side.items():
        if name not in t:
            continue
        yv = ymap(t[name][1])
        xv = ease(yv) if xv is None else xv
        names += [f"{name}_R", f"{name}_L"]
        pts += [(cx - xv, yv), (cx + xv, yv)]
    for name, ty_c in (("neck_c", t["neck_c"][1]), ("chest_c", t["armpit"][1]), ("hem_c", t["hem_c"][1])):
        names.append(name)
        pts.append((cx, ymap(ty_c) + (0.004 * u if name == "hem_c" else 0.0)))
    return names, np.array(pts, np.float32)


def _template_points(g: Garment, names: list[str]) -> np.ndarray:
    """Template counterparts of _body_points names ("armpit_R" is the mirror of the left-side "armpit")."""
    out = []
    for n in names:
        base, side = (n[:-2], n[-1]) if n.endswith(("_R", "_L")) else (n, "")
        q = np.array([0.0, g.pts["armpit"][1]], np.float32) if base == "chest_c" else g.pts[base]
        out.append(q * np.array([-1 if side == "R" else 1, 1], np.float32))
    return np.array(out, np.float32)


# ----------------------------------------------------------------------------------------------- compositing

class _Canvas:
    """Painter's algorithm over bounding boxes: albedo, shading, labels and garment source coords stay in step."""

    def __init__(self, albedo: np.ndarray, shade: np.ndarray):
        h, w = shade.shape
        self.albedo, self.shade = albedo.copy(), shade.copy()
        self.parse = np.zeros((h, w), np.uint8)
        self.src = np.full((h, w, 2), -1.0, np.float32)

    def copy(self) -> "_Canvas":
        out = object.__new__(_Canvas)
        out.albedo, out.shade, out.parse, out.src = (a.copy() for a in (self.albedo, self.shade, self.parse, self.src))
        return out

    def paint(self, box, mask, label, rgb, shade=1.0, src=None):
        y0, y1, x0, x1 = box
        assert mask.dtype == bool and mask.shape == (y1 - y0, x1 - x0), "paint masks are boolean crops"
        if not mask.any():
            return
        sl = np.s_[y0:y1, x0:x1]
        self.parse[sl][mask] = label
        self.albedo[sl][mask] = rgb if np.ndim(rgb) == 1 else rgb[mask]
        self.shade[sl][mask] = shade if np.ndim(shade) == 0 else shade[mask]
        self.src[sl][mask] = -1.0 if src is None else src[mask]


def _limb_shade(d, hw, k):
    """Cylinder falloff across a limb: 1 on the axis, 1-k at the silhouette."""
    return 1.0 - k * np.clip(np.abs(d) / hw, 0, 1) ** 2


def _inside(d, over, hw, cap: float):
    """Within half-width hw of the chain; end caps are half-ellipses cap * hw deep instead of half-discs."""
    return d * d + over * over * (1.0 / cap ** 2 - 1.0) <= hw * hw


def _paint_chain(cv: _Canvas, p: Person, joints, widths, label, rgb, side, pad=0.0, cap=0.7, root=True):
    """A limb: a flattened round cap at the root joint (unless root=False), cut flat at the far end."""
    box = _box(joints, max(widths) + pad + 2, p.h, p.w)
    t, d, over, after = _chain(box, (p.h, p.w), joints, side)
    hw = np.interp(t, _knots(joints), widths)
    m = _inside(d, over, hw, cap) & ~after
    if not root:
        m &= over <= 0
    cv.paint(box, m, label, rgb, _limb_shade(d, hw, p.shading_k))
    return box, t, d, over, after


def _paint_lower(cv: _Canvas, p: Person):
    """Trouser legs (or bare legs under a skirt), the seat/skirt block from the waist down, then shoes."""
    u, k = p.u, p.shading_k
    leg_w = LEG_WIDTHS * u * (p.x["hip"] / (0.09 * u)) ** 0.5
    for side, sgn, leg_label in (("R", 1.0, RIGHT_LEG), ("L", -1.0, LEFT_LEG)):
        joints = p.legs[side]
        if p.lower == "pants":
            _paint_chain(cv, p, joints, leg_w * 1.18, PANTS, p.lower_rgb, sgn)
        else:
            _paint_chain(cv, p, joints, leg_w, leg_label, p.skin, sgn)
    # hips / seat: a torso-like block from the waist down to the crotch
    yw, yh = p.y["waist"], p.y["hip"]
    crotch = yh + 0.045 * u
    xw, xh = p.x["waist"] * 1.04, p.x["hip"]
    block = np.array([(p.cx - xw, yw), (p.cx + xw, yw), (p.cx + xh, yh), (p.cx + xh * 0.95, crotch),
                      (p.cx - xh * 0.95, crotch), (p.cx - xh, yh)], np.float32)
    if p.lower == "pants":
        box = _box(block, 2, p.h, p.w)
        cv.paint(box, _poly_mask(box, block), PANTS, p.lower_rgb, _torso_shade(p, box, k))
    else:
        hem, fl = p.y["skirt_hem"], p.x["hip"] * 1.35
        skirt = np.array([(p.cx - xw, yw), (p.cx + xw, yw), (p.cx + xh * 1.02, yh), (p.cx + fl, hem),
                          (p.cx - fl, hem), (p.cx - xh * 1.02, yh)], np.float32)
        box = _box(skirt, 2, p.h, p.w)
        cv.paint(box, _poly_mask(box, skirt), SKIRT, p.lower_rgb, _torso_shade(p, box, k, widen=1.2))
    for side, label in (("R", RIGHT_SHOE), ("L", LEFT_SHOE)):
        ax, ay = p.legs[side][-1]
        out = -1 if side == "R" else 1
        c = (ax + out * 0.006 * u, ay + 0.032 * u)
        box = _box([c], 0.04 * u, p.h, p.w)
        m = _ellipse_mask(box, c, (0.03 * u, 0.02 * u))
        m |= _poly_mask(box, np.array([(ax - 0.024 * u, ay), (ax + 0.024 * u, ay), (c[0] + 0.03 * u, c[1]),
                                        (c[0] - 0.03 * u, c[1])], np.float32))
        cv.paint(box, m, label, p.shoe_rgb, 0.9)


def _torso_shade(p: Person, box, k, widen=1.0, hw_fn=None):
    """Cylinder shading of a torso-like part whose half-width at height y is hw_fn(y) (default: the body)."""
    xx, yy = _crop(box, *_grid(p.h, p.w))
    hw = (hw_fn or p.torso_hw)(yy[:, :1]) * widen
    return (1.0 - k * np.clip(np.abs(xx - p.cx) / hw, 0, 1.05) ** 2.2).astype(np.float32)


def _paint_torso_skin(cv: _Canvas, p: Person):
    """Neck + bare torso under the garment; whatever a neckline or strap leaves visible is real skin."""
    u, cx = p.u, p.cx
    nk = p.x["neck"]
    neck = np.array([(cx - nk, p.y["chin"] - 0.03 * u), (cx + nk, p.y["chin"] - 0.03 * u),
                     (cx + nk * 1.2, p.y["neck"]), (cx + nk * 2.2, p.y["shoulder"]),
                     (cx - nk * 2.2, p.y["shoulder"]), (cx - nk * 1.2, p.y["neck"])], np.float32)
    ys = np.array([p.y["neck"] + 0.004 * u, p.y["shoulder"], p.y["armpit"], p.y["waist"], p.y["hip"]])
    hw = p.torso_hw(ys)
    hw[0] = nk * 2.2
    torso = np.concatenate([np.stack([cx - hw, ys], 1), np.stack([cx + hw, ys], 1)[::-1]]).astype(np.float32)
    box = _box(np.concatenate([neck, torso]), 2, p.h, p.w)
    xx, yy = _crop(box, *_grid(p.h, p.w))
    m = _poly_mask(box, neck, torso)
    shade = _torso_shade(p, box, p.shading_k)
    neck_rows = yy < p.y["neck"]
    shade = np.where(neck_rows, 1.0 - p.shading_k * np.clip(np.abs(xx - cx) / nk, 0, 1) ** 2, shade)
    shoulder = (np.abs(xx - cx) > nk * 1.7) & (yy < p.y["shoulder"] + 0.05 * u)
    cv.paint(box, m & ~shoulder, NECK_LABEL, p.skin, shade)
    cv.paint(box, m & shoulder & (xx < cx), RIGHT_ARM, p.skin, shade)
    cv.paint(box, m & shoulder & (xx >= cx), LEFT_ARM, p.skin, shade)
    r = float(_arm_widths(p)[0]) * 0.92
    for side, label in (("R", RIGHT_ARM), ("L", LEFT_ARM)):  # shoulder balls
        c = p.arms[side][0]
        bb = _box([c], r + 2, p.h, p.w)
        bx, by = _crop(bb, *_grid(p.h, p.w))
        cv.paint(bb, _ellipse_mask(bb, c, (r, r)), label, p.skin,
                 _limb_shade(np.hypot(bx - c[0], by - c[1]), r, p.shading_k))


def _paint_garment_torso(cv: _Canvas, p: Person, g: Garment, cloth: Cloth):
    """Torso part: TPS from body control points to template control points, sampled with cv2.remap.

    The torso is shaded like a cylinder as wide as the garment at each height (darker towards the sides), times
    the garment's fold streaks, evaluated in template coordinates so they move with the fabric.
    """
    names, body = _body_points(g, p)
    tmpl = cloth.px(_template_points(g, names))
    box = _box(body, 0.03 * p.u, p.h, p.w)
    mx, my = _tps_map(body, tmpl, box, float(p.h))
    rgb, vis = _sample_cloth(cloth, "front", mx, my)
    ys = body[:, 1]
    order = np.argsort(ys)
    side = body[:, 0] - p.cx
    rows, hws = ys[order], np.abs(side[order])
    keep = hws > 0
    garment_hw = lambda yv: np.interp(yv, rows[keep], hws[keep])  # noqa: E731
    shade = _torso_shade(p, box, p.shading_k, hw_fn=garment_hw)
    if len(g.folds):
        tx, ty = (mx - cloth.origin[0]) / cloth.scale, (my - cloth.origin[1]) / cloth.scale   # template units
        shade = shade * fold_shading(g.folds, tx, ty)
    cv.paint(box, vis, g.label, rgb, shade, np.stack([mx, my], -1))


def _sleeve_widths(p: Person, g: Garment) -> np.ndarray:
    """Sleeve half-width at shoulder, elbow, wrist: roomy at the armhole, closer to the arm towards the cuff."""
    w = (0.035, 0.027, 0.022) if g.kind == "long-sleeve" else (0.038, 0.033, 0.03)
    return np.array(w) * p.u * (p.x["shoulder"] / (0.1 * p.u)) ** 0.4


def _arm_widths(p: Person) -> np.ndarray:
    return ARM_WIDTHS * p.u * (p.x["shoulder"] / (0.1 * p.u)) ** 0.4


def _paint_sleeve(cv: _Canvas, p: Person, g: Garment, cloth: Cloth, side: str, box, t, d, over, after):
    """Sleeve = a band around the arm chain, mapped bilinearly onto the template's sleeve quad.

    t along the arm -> along the sleeve (0 at the armhole, 1 at the cuff); the signed distance across the arm ->
    inner (armpit) .. outer (shoulder) edge. The round cap above the shoulder joint reads the armhole seam.
    """
    hw = np.interp(t, _knots(p.arms[side]), _sleeve_widths(p, g))
    end = min(g.sleeve_len, 1.0)
    vis = _inside(d, over, hw, 0.45) & (t <= end)
    if end >= 1.0:
        vis &= ~after
    mirror = np.array([-1 if side == "R" else 1, 1], np.float32)
    q = {k: cloth.px(g.pts[f"sleeve_{k}"] * mirror) for k in ("top_in", "top_out", "end_in", "end_out")}
    # keep 1.5 cloth px inside the quad: at the sleeve's edges the GT flow must read garment, not backdrop
    es = min(0.2, 1.5 / min(np.linalg.norm(q["top_out"] - q["top_in"]), np.linalg.norm(q["end_out"] - q["end_in"])))
    ev = min(0.2, 1.5 / min(np.linalg.norm(q["end_in"] - q["top_in"]), np.linalg.norm(q["end_out"] - q["top_out"])))
    v = (ev + (1 - 2 * ev) * np.clip(t / end, 0, 1))[..., None]
    s = (es + (1 - 2 * es) * (np.clip(d / hw, -1, 1) + 1) / 2)[..., None]  # inner edge .. outer edge
    src = ((1 - v) * ((1 - s) * q["top_in"] + s * q["top_out"])
           + v * ((1 - s) * q["end_in"] + s * q["end_out"])).astype(np.float32)
    rgb, seen = _sample_cloth(cloth, f"sleeve_{side}", src[..., 0], src[..., 1])
    vis &= seen
    cv.paint(box, vis, g.label, rgb, _limb_shade(d, hw, p.shading_k), src)


def _paint_arms(cv: _Canvas, p: Person, g: Garment, cloth: Cloth):
    """Arms over the torso (a bent-in forearm occludes the garment), sleeves over the arms, then hands.

    The shoulder ball belongs to the torso pass (under the garment), so straps and shoulder seams cover it.
    """
    u = p.u
    aw = _arm_widths(p)
    for side, sgn, label in (("R", 1.0, RIGHT_ARM), ("L", -1.0, LEFT_ARM)):
        joints = p.arms[side]
        box, t, d, over, after = _paint_chain(cv, p, joints, aw, label, p.skin, sgn, pad=0.02 * u, root=False)
        if g.sleeve_len > 0:
            _paint_sleeve(cv, p, g, cloth, side, box, t, d, over, after)
        wrist, fore = joints[-1], joints[-1] - joints[-2]
        fore = fore / np.linalg.norm(fore)
        c = wrist + fore * 0.016 * u
        hb = _box([c], 0.03 * u, p.h, p.w)
        ang = np.degrees(np.arctan2(fore[1], fore[0]))
        cv.paint(hb, _ellipse_mask(hb, c, (0.024 * u, 0.017 * u), ang), label, p.skin, 0.95)


def _paint_head(cv: _Canvas, p: Person, layer: str):
    """Back hair behind the body ('back'), or face, hair cap and features in front ('front')."""
    u, cx, hy = p.u, p.cx, p.y["head"]
    rx, ry = p.y["head_rx"], p.y["head_ry"]
    if layer == "back":
        if p.hair.startswith("long"):
            length = p.y["shoulder"] + 0.05 * u
            poly = np.array([(cx - rx * 1.15, hy), (cx + rx * 1.15, hy), (cx + rx * 1.35, length),
                             (cx - rx * 1.35, length)], np.float32)
            box = _box(poly, 2, p.h, p.w)
            cv.paint(box, _poly_mask(box, poly), HAIR, p.hair_rgb, 0.8)
        return
    if layer == "strands":
        if p.hair == "long_front":
            for s in (-1, 1):
                poly = np.array([(cx + s * rx * 0.75, hy), (cx + s * rx * 1.18, hy),
                                 (cx + s * rx * 1.5, p.y["shoulder"] + 0.1 * u),
                                 (cx + s * rx * 1.0, p.y["shoulder"] + 0.09 * u)], np.float32)
                box = _box(poly, 2, p.h, p.w)
                cv.paint(box, _poly_mask(box, poly), HAIR, p.hair_rgb, 0.92)
        return
    box = _box([(cx - rx * 1.6, hy - ry * 1.6), (cx + rx * 1.6, hy + ry * 1.3)], 2, p.h, p.w)
    xx, yy = _crop(box, *_grid(p.h, p.w))
    r2 = ((xx - cx) / rx) ** 2 + ((yy - hy) / ry) ** 2
    face_shade = (1.0 - 0.2 * np.clip(r2, 0, 1) ** 1.5).astype(np.float32)
    for s in (-1, 1):  # ears
        cv.paint(box, _ellipse_mask(box, (cx + s * rx * 0.97, hy + 0.05 * ry), (0.2 * rx, 0.3 * ry)), FACE,
                 p.skin * 0.93, 0.9)
    hair_big = _ellipse_mask(box, (cx, hy - 0.1 * ry), (rx * 1.1, ry * 1.02))
    if p.hair == "bun":
        hair_big |= _ellipse_mask(box, (cx, hy - ry * 1.05), (rx * 0.45, ry * 0.35))
    cv.paint(box, hair_big & (yy < hy), HAIR, p.hair_rgb, 0.9)
    cv.paint(box, r2 <= 1.0, FACE, p.skin, face_shade)
    fringe_line = hy - ry * (0.45 - 0.35 * ((xx - cx) / rx) ** 2)
    cv.paint(box, hair_big & (yy < fringe_line), HAIR, p.hair_rgb, 0.9)
    # features: albedo only, the label stays Face
    eye_y = hy - 0.04 * ry
    dark = np.array([35, 25, 22], np.float32)
    lip = p.skin * np.array([0.78, 0.55, 0.55], np.float32)
    if p.sunglasses:
        for s in (-1, 1):
            m = _ellipse_mask(box, (cx + s * 0.38 * rx, eye_y), (0.3 * rx, 0.17 * ry))
            cv.paint(box, m, SUNGLASSES, np.array([20, 20, 24], np.float32), 1.0)
    else:
        for s in (-1, 1):
            m = _ellipse_mask(box, (cx + s * 0.38 * rx, eye_y), (0.12 * rx, 0.065 * ry))
            cv.paint(box, m, FACE, dark, 1.0)
            brow = _ellipse_mask(box, (cx + s * 0.38 * rx, eye_y - 0.17 * ry), (0.2 * rx, 0.035 * ry))
            cv.paint(box, brow, FACE, p.hair_rgb * 0.8, 1.0)
    cv.paint(box, _ellipse_mask(box, (cx, hy + 0.5 * ry), (0.25 * rx, 0.06 * ry)), FACE, lip, 1.0)
    cv.paint(box, _ellipse_mask(box, (cx, hy + 0.24 * ry), (0.07 * rx, 0.05 * ry)), FACE, p.skin * 0.82, 1.0)


# ----------------------------------------------------------------------------------------------- public API

def _underlayers(p: Person) -> _Canvas:
    """Everything behind the garment (backdrop, back hair, bare torso, lower body): the same for A and B."""
    cv = _Canvas(*p.background[:2])
    _paint_head(cv, p, "back")
    _paint_torso_skin(cv, p)
    _paint_lower(cv, p)
    return cv


def _render(p: Person, g: Garment, cloth: Cloth, seed: int, role: str, cv: _Canvas) -> Sample:
    """Paint the garment, arms and head over the under-layers in cv (modified in place); the flow is the cloth
    coordinate of whatever garment part ended up on top."""
    _paint_garment_torso(cv, p, g, cloth)
    _paint_arms(cv, p, g, cloth)
    _paint_head(cv, p, "strands")
    _paint_head(cv, p, "front")

    image = np.clip(cv.albedo * cv.shade[..., None] + 0.5, 0, 255).astype(np.uint8)
    garment = np.isin(cv.parse, GARMENT_LABELS)
    h, w = p.h, p.w
    flow = np.full((h, w, 2), FLOW_INVALID, np.float32)
    flow[garment] = (2.0 * cv.src[garment] + 1.0) / np.array([w, h], np.float32) - 1.0
    rgb = tuple(int(v) for v in np.round(g.rgb))
    meta = {"seed": int(seed), "role": role, "garment_type": g.kind, "texture": g.texture, "garment_rgb": list(rgb),
            "pattern_rgb": [int(v) for v in np.round(g.rgb2)], "print": g.print_kind,
            "print_text": g.print_params.get("text", "") if g.print_kind in ("letters", "badge") else "",
            "folds": len(g.folds), "background": p.background[2], "lower": p.lower, "hair": p.hair, "pose": p.pose,
            "generator": GENERATOR_VERSION}
    return Sample(image=image, parse=cv.parse, cloth=np.clip(cloth.image + 0.5, 0, 255).astype(np.uint8),
                  cloth_mask=cloth.mask, garment_mask=garment.astype(np.uint8) * 255, flow=flow,
                  keypoints=p.keypoints.copy(), garment_type=g.kind, garment_rgb=rgb, shading=cv.shade, meta=meta)


def render_pair(seed: int, height: int = 256, width: int = 192) -> tuple[Sample, Sample]:
    """The same person (identity, pose, background, lower body) wearing garment A, then garment B.

    B differs from A in colour and in type or texture, so (image A, cloth B) -> image B is an exact try-on target.
    Independent streams for person / A / B keep the person identical whatever the garments draw.
    """
    ss = np.random.SeedSequence(int(seed)).spawn(4)
    rp, ra, rb, rc = (_rng(s) for s in ss)
    person = _sample_person(rp, height, width)
    ga = _sample_garment(ra, person.lower)
    for _ in range(64):  # rejection sampling; the stream is seeded, so this stays deterministic
        gb = _sample_garment(rb, person.lower)
        if _garments_differ(ga, gb):
            break
    ca, cb = _render_cloth(ga, height, width, rc), _render_cloth(gb, height, width, rc)
    under = _underlayers(person)
    a = _render(person, ga, ca, seed, "A", under.copy())
    return a, _render(person, gb, cb, seed, "B", under)  # the last user paints on the shared canvas itself


def colorize_parse(parse: np.ndarray) -> np.ndarray:
    """LIP ids -> RGB with LIP_PALETTE (for eyes, not for training)."""
    return LIP_PALETTE[np.minimum(parse, len(LIP_PALETTE) - 1)]


def flow_to_pixels(flow: np.ndarray, src_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """grid_sample(align_corners=False) grid -> cv2.remap pixel maps into an image of size src_hw."""
    h, w = src_hw
    return (((flow[..., 0] + 1.0) * w - 1.0) / 2.0).astype(np.float32), \
           (((flow[..., 1] + 1.0) * h - 1.0) / 2.0).astype(np.float32)


def warp_cloth(cloth: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Apply a GT flow to a cloth image (what the GMM should learn); invalid pixels read 0."""
    mx, my = flow_to_pixels(flow, cloth.shape[:2])
    return cv2.remap(cloth, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
