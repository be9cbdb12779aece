"""The person: limb chains and their widths, identity, proportions and pose, OpenPose keypoints."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backgrounds import _background
from .common import HAIR_COLOURS, SKIN_TONES, _crop, _grid, _hsv_colour

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
