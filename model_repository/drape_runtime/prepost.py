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

from drape_core import contract
from drape_core.geometry import LetterboxParams, feather_sigma, letterbox, letterbox_params, unletterbox
from drape_core.recolor_policy import (RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW, check_model_tensor, chw_to_hwc,
                                       mask_hw, recolor_choose)

from .codec import DEFAULT_LIMITS, ImageInputError, Limits, decode_image
from .model_config import ModelConfig, TensorConfig

__all__ = [
    "PreprocessLayout",
    "image_to_tensor",
    "preprocess_pair",
    "TryonPostLayout",
    "RecolorPostLayout",
    "tryon_composite",
    "recolor_apply",
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
    check_model_tensor(tryon, 3, hw, "tryon")
    check_model_tensor(edit_mask, 1, hw, "edit_mask")
    params = letterbox_params(orig.shape[:2], hw)

    mask = mask_hw(edit_mask)
    mask = cv2.GaussianBlur(mask, (0, 0), feather_sigma(hw[0]), borderType=cv2.BORDER_REPLICATE)
    mask_up = np.clip(unletterbox(mask, params), 0.0, 1.0)

    result = np.clip(chw_to_hwc(tryon) * 255.0, 0.0, 255.0)
    result_up = unletterbox(np.rint(result).astype(np.uint8), params)
    # blendLinear computes (a*wa + b*wb) / (wa + wb) in one pass without float copies of the image.
    return cv2.blendLinear(orig, result_up, 1.0 - mask_up, mask_up)


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
    check_model_tensor(recolored, 3, hw, "recolored")
    check_model_tensor(model_input, 3, hw, "model_input")
    check_model_tensor(garment_mask, 1, hw, "garment_mask")
    params = letterbox_params(orig.shape[:2], hw)

    mask_up = np.clip(unletterbox(mask_hw(garment_mask), params), 0.0, 1.0)
    mask_u8 = np.where(mask_up > 0.5, np.uint8(255), np.uint8(0))
    recolored, decision = recolor_choose(recolored, model_input, garment_mask, keep_below, still, still_mask_logits,
                                         fallback_margin)
    if decision == "kept":
        return orig.copy(), mask_u8, decision
    delta = chw_to_hwc(np.asarray(recolored, np.float32) - np.asarray(model_input, np.float32))
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
