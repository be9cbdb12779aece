"""Garments: templates and looks (textures, chest prints, fold streaks), the still product image (Cloth) and the
control points that put a template on a body."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .bodies import Person
from .common import (DRESS, GARMENT_TYPES, PRINTS, TEXTURES, UPPER, _bezier, _ellipse, _hsv_colour, _poly, _poly_mask,
                     _rect)

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
