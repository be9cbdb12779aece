"""Pre- and post-processing logic behind the Triton python models.

The ``model.py`` files under ``python_models/`` only move tensors between
Triton and these functions, so everything here is plain NumPy/OpenCV and can
be unit-tested without a server (and never imports torch).

Pre: decode both request images, letterbox them to the model resolution as
FP32 ``[3,H,W]`` in ``[0,1]``, and pass the decoded first image on at full
resolution. Post: map the model's low-resolution result back onto that
full-resolution image, touching only the pixels the model changed, so output
detail is not limited by the model resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import contract
from .codec import DEFAULT_LIMITS, ImageInputError, Limits, decode_image
from .geometry import LetterboxParams, letterbox, letterbox_params, unletterbox
from .model_config import ModelConfig, TensorConfig

__all__ = [
    "PreprocessLayout",
    "image_to_tensor",
    "preprocess_pair",
    "TryonPostLayout",
    "RecolorPostLayout",
    "tryon_composite",
    "recolor_apply",
    "recolor_fallback",
    "recolor_choose",
    "feather_sigma",
]


# --------------------------------------------------------------------------- pre


def image_to_tensor(img: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxParams]:
    """Letterbox an ``HxWx3`` uint8 RGB image to ``hw`` and return FP32 ``[3,H,W]`` in ``[0,1]``.

    This is the exact model-input transform at serving time (resize in uint8
    with the geometry module's interpolation rule, then divide by 255);
    training feeds its networks through the same geometry.
    """
    boxed, params = letterbox(img, hw)
    tensor = np.ascontiguousarray(boxed.transpose(2, 0, 1), dtype=np.float32)
    tensor *= np.float32(1.0 / 255.0)
    return tensor, params


@dataclass(frozen=True)
class PreprocessLayout:
    """Tensor names and model resolution of one preprocess model, read from its config.

    Config order defines roles: the two inputs are images a and b; the two
    FP32 ``[3,H,W]`` outputs are their tensors in the same order; the UINT8
    ``[-1,-1,3]`` output is the decoded image a.
    """

    input_a: str
    input_b: str
    output_a: str
    output_b: str
    output_orig: str
    height: int
    width: int

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "PreprocessLayout":
        if len(config.inputs) != 2 or any(not _is_encoded_image(t) for t in config.inputs):
            raise ValueError(f"{config.name}: expected two TYPE_UINT8 [-1] inputs, got {config.inputs}")
        tensors = [t for t in config.outputs if t.data_type == "TYPE_FP32"]
        origs = [t for t in config.outputs if t.data_type == "TYPE_UINT8"]
        if len(tensors) != 2 or len(origs) != 1 or len(config.outputs) != 3:
            raise ValueError(f"{config.name}: expected outputs FP32 [3,H,W] x2 and UINT8 [-1,-1,3], got {config.outputs}")
        hw = {_chw_resolution(t, 3, config.name) for t in tensors}
        if len(hw) != 1:
            raise ValueError(f"{config.name}: the two FP32 outputs disagree on resolution: {sorted(hw)}")
        if origs[0].dims != (-1, -1, 3):
            raise ValueError(f"{config.name}: output {origs[0].name!r} must have dims [-1,-1,3], got {list(origs[0].dims)}")
        (height, width), = hw
        return cls(
            input_a=config.inputs[0].name,
            input_b=config.inputs[1].name,
            output_a=tensors[0].name,
            output_b=tensors[1].name,
            output_orig=origs[0].name,
            height=height,
            width=width,
        )


def _is_encoded_image(tensor: TensorConfig) -> bool:
    return tensor.data_type == "TYPE_UINT8" and tensor.dims == (-1,)


def _chw_resolution(tensor: TensorConfig, channels: int, model: str) -> tuple[int, int]:
    dims = tensor.dims
    if len(dims) != 3 or dims[0] != channels or dims[1] < 1 or dims[2] < 1:
        raise ValueError(f"{model}: tensor {tensor.name!r} must have dims [{channels},H,W], got {list(dims)}")
    return dims[1], dims[2]


def _single_encoded(data: np.ndarray, name: str) -> np.ndarray:
    """A request carries exactly one encoded image: client shape ``[1, n_bytes]``."""
    if data.ndim != 2 or data.shape[0] != 1:
        raise ImageInputError(name, f"expected one encoded image per request (shape [1, n_bytes]), got shape {list(data.shape)}")
    return data[0]


def preprocess_pair(
    encoded_a: np.ndarray, encoded_b: np.ndarray, layout: PreprocessLayout, limits: Limits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Decode one request's two images into the preprocess outputs (each with a batch axis of 1).

    Raises :class:`ImageInputError` naming the offending input.
    """
    img_a = decode_image(_single_encoded(encoded_a, layout.input_a), layout.input_a, limits)
    img_b = decode_image(_single_encoded(encoded_b, layout.input_b), layout.input_b, limits)
    tensor_a, _ = image_to_tensor(img_a, layout.hw)
    tensor_b, _ = image_to_tensor(img_b, layout.hw)
    return {
        layout.output_a: tensor_a[None],
        layout.output_b: tensor_b[None],
        layout.output_orig: img_a[None],
    }


# -------------------------------------------------------------------------- post


def feather_sigma(model_height: int) -> float:
    """Gaussian sigma (model pixels) used to soften the try-on edit mask: 1 px per 256 rows.

    Scaling with the model height keeps the feather the same fraction of the
    image at 256x192, 512x384 and 1024x768.
    """
    return max(0.5, model_height / 256.0)


def _chw_to_hwc(t: np.ndarray) -> np.ndarray:
    """CHW model output to HWC; NaN/inf (a diverged network) become 0 rather than garbage pixels."""
    hwc = np.ascontiguousarray(np.asarray(t, dtype=np.float32).transpose(1, 2, 0))
    return np.nan_to_num(hwc, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _mask_hw(mask: np.ndarray) -> np.ndarray:
    """``[1,H,W]`` mask to ``HxW`` in [0,1]; NaN counts as "not changed"."""
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3:
        m = m[0]
    return np.clip(np.nan_to_num(m, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _check_model_tensor(t: np.ndarray, channels: int, hw: tuple[int, int], what: str) -> None:
    if t.shape != (channels, *hw):
        raise ValueError(f"{what}: expected shape [{channels},{hw[0]},{hw[1]}], got {list(t.shape)}")


def _check_orig(orig: np.ndarray) -> None:
    if orig.dtype != np.uint8 or orig.ndim != 3 or orig.shape[2] != 3:
        raise ValueError(f"orig: expected an HxWx3 uint8 image, got {orig.dtype} {list(orig.shape)}")


def tryon_composite(tryon: np.ndarray, edit_mask: np.ndarray, orig: np.ndarray) -> np.ndarray:
    """Paste the try-on result into the full-resolution person image.

    ``tryon`` is ``[3,H,W]`` in ``[0,1]``, ``edit_mask`` ``[1,H,W]`` in
    ``[0,1]`` (both letterboxed like the person), ``orig`` the decoded
    ``h x w x 3`` uint8 person. Returns ``orig*(1-m) + up(tryon)*m`` where
    ``m = up(feather(edit_mask))``: pixels the model did not touch keep the
    original's full resolution, exactly.
    """
    _check_orig(orig)
    hw = tuple(tryon.shape[1:])
    _check_model_tensor(tryon, 3, hw, "tryon")
    _check_model_tensor(edit_mask, 1, hw, "edit_mask")
    params = letterbox_params(orig.shape[:2], hw)

    mask = _mask_hw(edit_mask)
    mask = cv2.GaussianBlur(mask, (0, 0), feather_sigma(hw[0]), borderType=cv2.BORDER_REPLICATE)
    mask_up = np.clip(unletterbox(mask, params), 0.0, 1.0)

    result = np.clip(_chw_to_hwc(tryon) * 255.0, 0.0, 255.0)
    result_up = unletterbox(np.rint(result).astype(np.uint8), params)
    # blendLinear computes (a*wa + b*wb) / (wa + wb) in one pass without float copies of the image.
    return cv2.blendLinear(orig, result_up, 1.0 - mask_up, mask_up)


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
    inside = (_mask_hw(garment_mask) > 0.5).astype(np.uint8)
    if not inside.any():
        return 0.0
    pair = np.clip(np.concatenate([_chw_to_hwc(recolored), _chw_to_hwc(model_input)], 1), 0.0, 1.0)
    lab = cv2.cvtColor(pair, cv2.COLOR_RGB2Lab)                       # one pass for both halves
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
    return cv2.cvtColor(np.clip(rgb, 0.0, 1.0).astype(np.float32).reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(-1, 3)


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
    rgb = cv2.cvtColor(lab.astype(np.float32).reshape(image.shape), cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0)


@dataclass(frozen=True)
class FallbackCandidate:
    """The classical transfer beside the network's output, each scored by ``still_distance``."""

    image: np.ndarray              # [3,H,W]: model_input with the Gaussian transfer blended in by the garment mask
    distance: float                # the transfer's distance to the still (garment pixels, mask > 0.5)
    network_distance: float        # the network output's distance to the still (the same pixels)


def _check_still(still: np.ndarray, still_mask_logits: np.ndarray, hw: tuple[int, ...]) -> None:
    _check_model_tensor(still, 3, hw, "still")
    _check_model_tensor(still_mask_logits, 1, hw, "still_mask_logits")


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
    m = _mask_hw(garment_mask)
    inside, still_inside = m > 0.5, np.nan_to_num(np.asarray(still_mask_logits[0], np.float32), nan=-1.0) > 0
    if inside.sum() < _MIN_PIXELS or still_inside.sum() < _MIN_PIXELS:
        return None
    net, photo, ref = _chw_to_hwc(recolored), np.clip(_chw_to_hwc(model_input), 0, 1), _chw_to_hwc(still)
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


def recolor_apply(
    recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray, orig: np.ndarray,
    keep_below: float = RECOLOR_KEEP_BELOW, still: np.ndarray | None = None, still_mask_logits: np.ndarray | None = None,
    fallback_margin: float = RECOLOR_FALLBACK_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the model's colour change to the full-resolution on-model image.

    Returns ``(recolored_image, garment_mask)`` where
    ``recolored_image = clip(orig + 255*up(recolored - model_input)*up(mask))``
    (uint8 ``h x w x 3``) and ``garment_mask = 255 where up(mask) > 0.5``
    (uint8 ``h x w``). The colour change is low-frequency, so applying it as
    an upsampled delta keeps the original's full-resolution texture. Where the
    change is smaller than ``keep_below`` (``recolor_change``, mean CIE76) the
    photo's colour is taken to be right already and ``orig`` comes back as is.
    Given the model-resolution ``still`` and ``still_mask_logits``, the change
    applied may be the classical one instead (``recolor_fallback``).
    """
    image, mask, _ = recolor_decide(recolored, model_input, garment_mask, orig, keep_below, still, still_mask_logits,
                                    fallback_margin)
    return image, mask


def recolor_decide(
    recolored: np.ndarray, model_input: np.ndarray, garment_mask: np.ndarray, orig: np.ndarray,
    keep_below: float = RECOLOR_KEEP_BELOW, still: np.ndarray | None = None, still_mask_logits: np.ndarray | None = None,
    fallback_margin: float = RECOLOR_FALLBACK_MARGIN,
) -> tuple[np.ndarray, np.ndarray, str]:
    """``recolor_apply`` plus what was done, one of ``RECOLOR_DECISIONS`` (for the metrics): the network's change
    ``applied``, the photo ``kept`` as it is, or the classical transfer served as the ``fallback``."""
    _check_orig(orig)
    hw = tuple(recolored.shape[1:])
    _check_model_tensor(recolored, 3, hw, "recolored")
    _check_model_tensor(model_input, 3, hw, "model_input")
    _check_model_tensor(garment_mask, 1, hw, "garment_mask")
    params = letterbox_params(orig.shape[:2], hw)

    mask_up = np.clip(unletterbox(_mask_hw(garment_mask), params), 0.0, 1.0)
    mask_u8 = np.where(mask_up > 0.5, np.uint8(255), np.uint8(0))
    recolored, decision = recolor_choose(recolored, model_input, garment_mask, keep_below, still, still_mask_logits,
                                         fallback_margin)
    if decision == "kept":
        return orig.copy(), mask_u8, decision
    delta = _chw_to_hwc(np.asarray(recolored, np.float32) - np.asarray(model_input, np.float32))
    delta_up = unletterbox(delta, params)

    # OpenCV does the full-resolution arithmetic in single passes (about 2x faster than NumPy
    # at 4096 px); cv2.add into CV_8U rounds and saturates, i.e. clip(rint(orig + change)).
    change = cv2.multiply(delta_up, cv2.merge([mask_up, mask_up, mask_up]), scale=255.0)
    image = cv2.add(orig, change, dtype=cv2.CV_8U)
    return image, mask_u8, decision


@dataclass(frozen=True)
class TryonPostLayout:
    """Names used by ``tryon_postprocess`` (fixed by the ensemble wiring)."""

    tryon: str = "tryon"
    edit_mask: str = "edit_mask"
    orig: str = "orig"
    output: str = contract.TRYON.outputs[0].name

    @classmethod
    def from_config(cls, config: ModelConfig) -> "TryonPostLayout":
        layout = cls()
        _require_names(config, (layout.tryon, layout.edit_mask, layout.orig), (layout.output,))
        return layout

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Batched (leading axis) inputs to batched outputs."""
        out = [
            tryon_composite(inputs[self.tryon][i], inputs[self.edit_mask][i], inputs[self.orig][i])
            for i in range(_batch_size(inputs))
        ]
        return {self.output: np.stack(out)}


@dataclass(frozen=True)
class RecolorPostLayout:
    """Names used by ``recolor_postprocess`` (fixed by the ensemble wiring)."""

    recolored: str = "recolored"
    model_input: str = "model_input"
    garment_mask: str = "garment_mask"
    orig: str = "orig"
    still: str = "still"
    still_mask_logits: str = "still_mask_logits"
    output_image: str = contract.RECOLOR.outputs[0].name
    output_mask: str = contract.RECOLOR.outputs[1].name
    keep_below: float = RECOLOR_KEEP_BELOW
    fallback_margin: float = RECOLOR_FALLBACK_MARGIN
    KEEP_BELOW_PARAMETER = "keep_below_delta_e76"
    FALLBACK_PARAMETER = "still_fallback_margin"

    @classmethod
    def from_config(cls, config: ModelConfig) -> "RecolorPostLayout":
        keep_below = _number_parameter(config, cls.KEEP_BELOW_PARAMETER, RECOLOR_KEEP_BELOW,
                                       "mean CIE76; 0 = always apply the change", allow_inf=False)
        margin = _number_parameter(config, cls.FALLBACK_PARAMETER, RECOLOR_FALLBACK_MARGIN,
                                   "sliced Wasserstein distance to the still; inf = never fall back", allow_inf=True)
        layout = cls(keep_below=keep_below, fallback_margin=margin)
        _require_names(
            config,
            (layout.recolored, layout.model_input, layout.garment_mask, layout.orig, layout.still,
             layout.still_mask_logits),
            (layout.output_image, layout.output_mask),
        )
        return layout

    def run(self, inputs: dict[str, np.ndarray], decisions: list[str] | None = None) -> dict[str, np.ndarray]:
        """Batched (leading axis) inputs to batched outputs; ``decisions`` (if given) gets what was done per item
        (one of ``RECOLOR_DECISIONS``). Without ``still`` / ``still_mask_logits`` inputs there is no fallback."""
        images, masks = [], []
        for i in range(_batch_size(inputs)):
            still = inputs[self.still][i] if self.still in inputs else None
            logits = inputs[self.still_mask_logits][i] if self.still_mask_logits in inputs else None
            image, mask, decision = recolor_decide(
                inputs[self.recolored][i], inputs[self.model_input][i], inputs[self.garment_mask][i], inputs[self.orig][i],
                self.keep_below, still, logits, self.fallback_margin,
            )
            if decisions is not None:
                decisions.append(decision)
            images.append(image)
            masks.append(mask)
        return {self.output_image: np.stack(images), self.output_mask: np.stack(masks)}


def _number_parameter(config: ModelConfig, key: str, default: float, meaning: str, allow_inf: bool) -> float:
    raw = config.parameter(key, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if np.isnan(value) or value < 0 or (value == np.inf and not allow_inf):
        raise ValueError(f"{config.name}: parameter {key} must be a number >= 0 ({meaning}), got {raw!r}")
    return value


def _require_names(config: ModelConfig, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    have_in = {t.name for t in config.inputs}
    have_out = {t.name for t in config.outputs}
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing:
        raise ValueError(f"{config.name}: config lacks tensors {missing} (inputs {sorted(have_in)}, outputs {sorted(have_out)})")


def _batch_size(inputs: dict[str, np.ndarray]) -> int:
    sizes = {name: arr.shape[0] for name, arr in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs disagree on batch size: {sizes}")
    return next(iter(sizes.values()))
