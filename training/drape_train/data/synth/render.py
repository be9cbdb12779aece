"""Compositing (the painter's algorithm over the backdrop) and the public API: render_pair, colorize_parse,
flow_to_pixels, warp_cloth."""
from __future__ import annotations

import cv2
import numpy as np

from drape_core.contract import DEFAULT_RESOLUTION

from .bodies import ARM_WIDTHS, LEG_WIDTHS, Person, _chain, _knots, _sample_person
from .common import (FACE, FLOW_INVALID, GARMENT_LABELS, GENERATOR_VERSION, HAIR, LEFT_ARM, LEFT_LEG, LEFT_SHOE,
                     LIP_PALETTE, NECK_LABEL, PANTS, RIGHT_ARM, RIGHT_LEG, RIGHT_SHOE, SKIRT, SUNGLASSES, Sample, _box,
                     _crop, _ellipse_mask, _grid, _poly_mask, _rng, _tps_map)
from .garments import (Cloth, Garment, _body_points, _garments_differ, _render_cloth, _sample_cloth, _sample_garment,
                       _template_points, fold_shading)

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


def render_pair(seed: int, height: int = DEFAULT_RESOLUTION[0],
                width: int = DEFAULT_RESOLUTION[1]) -> tuple[Sample, Sample]:
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
