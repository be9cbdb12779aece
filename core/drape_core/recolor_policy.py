"""What recolor serves: the keep-gate, the still-consistency fallback and the choice between them.

One implementation, at model resolution (``[3,H,W]`` sRGB in [0,1]), imported by the serving postprocess
(``drape_runtime.prepost``, which maps the choice back onto the full-resolution photo), by training's evaluation
of the served answer (``drape_train.evaluate``, ``objectives.served_recolor``) and by the fallback's tuning
(``drape_train.tune_fallback``), so the number training reports is the one served. NumPy and OpenCV; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .colour import lab_to_rgb_f32, rgb_to_lab_f32

__all__ = [
    "RECOLOR_KEEP_BELOW",
    "RECOLOR_FALLBACK_MARGIN",
    "RECOLOR_DECISIONS",
    "FallbackCandidate",
    "recolor_change",
    "still_distance",
    "shading_free",
    "gaussian_transfer",
    "fallback_candidate",
    "recolor_fallback",
    "recolor_choose",
]


def chw_to_hwc(t: np.ndarray) -> np.ndarray:
    """CHW model output to HWC; NaN/inf (a diverged network) become 0 rather than garbage pixels."""
    hwc = np.ascontiguousarray(np.asarray(t, dtype=np.float32).transpose(1, 2, 0))
    return np.nan_to_num(hwc, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def mask_hw(mask: np.ndarray) -> np.ndarray:
    """``[1,H,W]`` mask to ``HxW`` in [0,1]; NaN counts as "not changed"."""
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3:
        m = m[0]
    return np.clip(np.nan_to_num(m, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def check_model_tensor(t: np.ndarray, channels: int, hw: tuple[int, int], what: str) -> None:
    if t.shape != (channels, *hw):
        raise ValueError(f"{what}: expected shape [{channels},{hw[0]},{hw[1]}], got {list(t.shape)}")


# Recolor keeps the photo as it is when the network would change the garment by less than this mean CIE76
# colour difference (Lab, at model resolution, inside the garment): the network cannot tell a photo whose colour
# is already right from a light cast, and changes a right one by ~1.7 CIEDE2000 on average. Chosen on the
# validation split as the largest threshold that costs <= ~0.01 at every degradation magnitude of the documented
# range (0.05-0.35); on the test split it takes already-right photos from 1.69 to 1.10 and light casts
# (m 0.02) from 1.72 to 1.60, for +0.004 on the documented range (training/README.md). 0 turns it off.
RECOLOR_KEEP_BELOW = 2.5


def recolor_change(recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray) -> float:
    """Mean CIE76 difference between the network's output and its input inside the garment (mask > 0.5), at model
    resolution; 0 where the mask is empty. ``[3,H,W]`` sRGB in [0,1] and ``[1,H,W]``."""
    inside = (mask_hw(garment_mask) > 0.5).astype(np.uint8)
    if not inside.any():
        return 0.0
    pair = np.clip(np.concatenate([chw_to_hwc(recolored), chw_to_hwc(model_input)], 1), 0.0, 1.0)
    lab = rgb_to_lab_f32(pair)                                        # one pass for both halves
    d = lab[:, : inside.shape[1]] - lab[:, inside.shape[1]:]
    return float(cv2.mean(np.sqrt(np.einsum("ijk,ijk->ij", d, d)), mask=inside)[0])


# The still-consistency fallback. The recolor network has no correspondence between the still and the photo (the
# garment is warped and shaded on the body), so on some photos its colour misses the still's by far more than a
# classical transfer does, and no target is needed to see it: compare each result's *shading-free* colours
# (rgb / (luminance + 0.05), which cancels the photo's shading) with the still's. Where the closed-form transfer
# below is closer to the still than the network by more than RECOLOR_FALLBACK_MARGIN, it is served instead.
# The margin was chosen on the validation split (training/README.md, "Still-consistency fallback"); inf turns the
# fallback off.
RECOLOR_FALLBACK_MARGIN = 0.03
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722])
_SWD_DIRECTIONS = np.random.default_rng(0).normal(size=(64, 3))    # fixed: the distance is part of the contract
_SWD_DIRECTIONS /= np.linalg.norm(_SWD_DIRECTIONS, axis=1, keepdims=True)
_SWD_DIRECTIONS32 = _SWD_DIRECTIONS.astype(np.float32)
_SWD_QUANTILES = np.linspace(0.02, 0.98, 49)
_MIN_PIXELS = 16


def shading_free(colours: np.ndarray) -> np.ndarray:
    """``[N,3]`` sRGB in [0,1] divided by its luminance (+0.05): what stays of a colour when it is lit differently."""
    c = np.asarray(colours, np.float64)
    return c / (c @ _LUMINANCE + 0.05)[:, None]


def _colour_profile(colours: np.ndarray) -> np.ndarray:
    """``[49,64]``: the quantiles of the shading-free colours projected on the fixed directions."""
    # [64,N] projections, sorted once (one sort beats 49 partitions). In float32 with the colours contiguous per
    # channel this takes 0.6-0.7x the float64 time; the profile moves by < 1e-6, the served decisions not at all
    # (training/README.md, "Still-consistency fallback").
    channels = np.ascontiguousarray(shading_free(colours).T, dtype=np.float32)
    ranked = np.sort(_SWD_DIRECTIONS32 @ channels, axis=1)
    pos = _SWD_QUANTILES * (ranked.shape[1] - 1)                            # np.quantile's "linear" method
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, ranked.shape[1] - 1)
    return (ranked[:, lo] * (1 - (pos - lo)) + ranked[:, hi] * (pos - lo)).T


def still_distance(colours: np.ndarray, still_colours: np.ndarray | None = None, *,
                   still_profile: np.ndarray | None = None) -> float:
    """Sliced Wasserstein-1 distance (64 fixed directions, 49 quantiles) between the shading-free colour
    distributions of ``colours`` (``[N,3]``, a garment as recoloured) and ``still_colours`` (``[M,3]``; or its
    ``_colour_profile``, computed once for several candidates)."""
    ref = _colour_profile(still_colours) if still_profile is None else still_profile
    return float(np.abs(_colour_profile(colours) - ref).mean())


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _lab(rgb: np.ndarray) -> np.ndarray:
    return rgb_to_lab_f32(np.clip(rgb, 0.0, 1.0).astype(np.float32).reshape(-1, 1, 3)).reshape(-1, 3)


def gaussian_transfer(image: np.ndarray, inside: np.ndarray, still: np.ndarray, still_inside: np.ndarray) -> np.ndarray:
    """Colour transfer by the optimal-transport map between Gaussians in Lab (Pitie & Kokaram 2007): the linear
    map that takes the garment's Lab mean/covariance (``image`` ``HxWx3`` where ``inside``) to the still's.
    Returns the whole image mapped (``HxWx3`` float32 in [0,1]); the caller blends it in with the garment mask."""
    x, r = _lab(image[inside]).astype(np.float64), _lab(still[still_inside]).astype(np.float64)
    sx, sr = np.cov(x.T) + 1e-3 * np.eye(3), np.cov(r.T) + 1e-3 * np.eye(3)
    half = _sqrtm_psd(sx)
    inv = np.linalg.inv(half)
    t = inv @ _sqrtm_psd(half @ sr @ half) @ inv
    lab = (_lab(image).astype(np.float64) - x.mean(0)) @ t.T + r.mean(0)
    rgb = lab_to_rgb_f32(lab.astype(np.float32).reshape(image.shape))
    return np.clip(rgb, 0.0, 1.0)


@dataclass(frozen=True)
class FallbackCandidate:
    """The classical transfer beside the network's output, each scored by ``still_distance``."""

    image: np.ndarray              # [3,H,W]: model_input with the Gaussian transfer blended in by the garment mask
    distance: float                # the transfer's distance to the still (garment pixels, mask > 0.5)
    network_distance: float        # the network output's distance to the still (the same pixels)


def _check_still(still: np.ndarray, still_mask_logits: np.ndarray, hw: tuple[int, ...]) -> None:
    check_model_tensor(still, 3, hw, "still")
    check_model_tensor(still_mask_logits, 1, hw, "still_mask_logits")


def fallback_candidate(
    recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray, still: np.ndarray,
    still_mask_logits: np.ndarray, unless_within: float | None = None,
) -> FallbackCandidate | None:
    """The Gaussian transfer of ``model_input`` to ``still`` (blended in with ``garment_mask``, as the network
    composites) and both still distances; None where the garment or the still has fewer than 16 pixels
    (mask > 0.5, still-mask logit > 0), and, given ``unless_within``, where the network's own distance is at most
    that: a distance is >= 0, so no transfer could then beat the network by more than that margin, and the
    transfer is not computed (the case of most photos)."""
    _check_still(still, still_mask_logits, tuple(recolored.shape[1:]))
    m = mask_hw(garment_mask)
    inside, still_inside = m > 0.5, np.nan_to_num(np.asarray(still_mask_logits[0], np.float32), nan=-1.0) > 0
    if inside.sum() < _MIN_PIXELS or still_inside.sum() < _MIN_PIXELS:
        return None
    net, photo, ref = chw_to_hwc(recolored), np.clip(chw_to_hwc(model_input), 0, 1), chw_to_hwc(still)
    profile = _colour_profile(np.clip(ref[still_inside], 0.0, 1.0))
    network_distance = still_distance(np.clip(net[inside], 0, 1), still_profile=profile)
    if unless_within is not None and network_distance <= unless_within:
        return None
    mapped = gaussian_transfer(photo, inside, ref, still_inside)
    image = np.ascontiguousarray((photo + m[..., None] * (mapped - photo)).transpose(2, 0, 1), dtype=np.float32)
    return FallbackCandidate(image, still_distance(mapped[inside], still_profile=profile), network_distance)


def recolor_fallback(
    recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray, still: np.ndarray,
    still_mask_logits: np.ndarray, margin: float = RECOLOR_FALLBACK_MARGIN,
) -> tuple[np.ndarray, bool]:
    """The network's ``recolored`` ``[3,H,W]``, or the ``fallback_candidate``'s image where that is closer to the
    still's shading-free colours (``still_distance``) by more than ``margin``. Returns ``(recolored, fell_back)``;
    garments or stills of fewer than 16 pixels keep the network's output, and so does every item at ``inf``."""
    if not margin < np.inf:
        _check_still(still, still_mask_logits, tuple(recolored.shape[1:]))
        return recolored, False
    candidate = fallback_candidate(recolored, model_input, garment_mask, still, still_mask_logits, unless_within=margin)
    if candidate is None or candidate.distance + margin >= candidate.network_distance:
        return recolored, False
    return candidate.image, True


RECOLOR_DECISIONS = ("applied", "kept", "fallback")


def recolor_choose(
    recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray, keep_below: float = RECOLOR_KEEP_BELOW,
    still: np.ndarray | None = None, still_mask_logits: np.ndarray | None = None,
    fallback_margin: float = RECOLOR_FALLBACK_MARGIN,
) -> tuple[np.ndarray, str]:
    """What recolor serves, at model resolution ``[3,H,W]``, and which of ``RECOLOR_DECISIONS`` it is: the photo
    ``kept`` where the network changes it by less than ``keep_below`` (``recolor_change``, mean CIE76), else the
    classical transfer as the ``fallback`` (given the still: ``recolor_fallback``), else the network's change
    ``applied``."""
    if keep_below > 0 and recolor_change(recolored, model_input, garment_mask) < keep_below:
        return model_input, "kept"
    if still is not None and still_mask_logits is not None:
        chosen, fell_back = recolor_fallback(recolored, model_input, garment_mask, still, still_mask_logits,
                                             fallback_margin)
        if fell_back:
            return chosen, "fallback"
    return recolored, "applied"
