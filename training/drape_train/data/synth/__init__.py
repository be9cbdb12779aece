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

Modules (each imports only the ones listed above it; this package re-exports the public names)
  common       constants and LIP labels, Sample, seeded RNGs, grids, boxes, masks, colours, the thin-plate
               spline, raster primitives
  backgrounds  backdrops (BACKGROUNDS) and furniture
  bodies       Person: limb chains, proportions, pose, keypoints
  garments     Garment, chest prints, fold streaks, the still product image (Cloth), template <-> body points
  render       compositing and the public API: render_pair, colorize_parse, flow_to_pixels, warp_cloth
"""
from __future__ import annotations

from .backgrounds import FURNITURE
from .bodies import ARM_WIDTHS, LEG_WIDTHS, Person
from .common import (BACKGROUND, BACKGROUNDS, DRESS, FACE, FLOW_INVALID, GARMENT_LABELS, GARMENT_TYPES,
                     GENERATOR_VERSION, HAIR, HAIR_COLOURS, KEYPOINT_NAMES, LEFT_ARM, LEFT_LEG, LEFT_SHOE, LIP_LABELS,
                     LIP_PALETTE, NECK_LABEL, PANTS, PRINTS, RIGHT_ARM, RIGHT_LEG, RIGHT_SHOE, SKIN_TONES, SKIRT,
                     SUNGLASSES, TEXTURES, UPPER, Sample, tps_eval, tps_fit)
from .garments import PARTS, PRINT_FONTS, PRINT_GLYPHS, PRINT_SHAPES, TONES, Cloth, Garment, fold_shading
from .render import colorize_parse, flow_to_pixels, render_pair, warp_cloth

__all__ = [
    "ARM_WIDTHS", "BACKGROUND", "BACKGROUNDS", "DRESS", "FACE", "FLOW_INVALID", "FURNITURE", "GARMENT_LABELS",
    "GARMENT_TYPES", "GENERATOR_VERSION", "HAIR", "HAIR_COLOURS", "KEYPOINT_NAMES", "LEFT_ARM", "LEFT_LEG", "LEFT_SHOE",
    "LEG_WIDTHS", "LIP_LABELS", "LIP_PALETTE", "NECK_LABEL", "PANTS", "PARTS", "PRINTS", "PRINT_FONTS",
    "PRINT_GLYPHS", "PRINT_SHAPES", "RIGHT_ARM", "RIGHT_LEG", "RIGHT_SHOE", "SKIN_TONES", "SKIRT", "SUNGLASSES",
    "TEXTURES", "TONES", "UPPER", "Cloth", "Garment", "Person", "Sample", "colorize_parse", "flow_to_pixels",
    "fold_shading", "render_pair", "tps_eval", "tps_fit", "warp_cloth",
]
