"""Letterbox geometry shared by training and serving.

Training and serving must map images to the model resolution in exactly the
same way, otherwise the networks see a different distribution at serving time
than they were trained on. This module is the single implementation both sides
import; it depends only on NumPy and OpenCV (never torch), so it can run inside
the Triton python backend.

Letterboxing keeps the aspect ratio: the source is resized so it fits inside
``dst_hw``, centred, and the remaining border is filled by replicating the edge
pixels (replicate padding gives the networks plausible context rather than a
hard black frame). ``unletterbox`` crops the content region back out and
resizes it to the original size.

Arrays may be ``HxW`` or ``HxWxC`` (any C), ``uint8`` or ``float32``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["LetterboxParams", "letterbox_params", "letterbox", "unletterbox", "resize"]

# OpenCV's INTER_AREA (and a few others) only handle up to 4 channels at once.
_CV_MAX_CHANNELS = 4


@dataclass(frozen=True)
class LetterboxParams:
    """Where the source image landed inside the letterboxed canvas.

    ``scale`` is the uniform scale factor ``min(dst_h/src_h, dst_w/src_w)``;
    ``content_h``/``content_w`` are the rounded size of the resized source and
    ``top``/``left`` its offset in the ``dst_h x dst_w`` canvas.
    """

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    scale: float
    top: int
    left: int
    content_h: int
    content_w: int

    @property
    def bottom(self) -> int:
        """Rows of padding below the content."""
        return self.dst_h - self.top - self.content_h

    @property
    def right(self) -> int:
        """Columns of padding right of the content."""
        return self.dst_w - self.left - self.content_w

    @property
    def content_slice(self) -> tuple[slice, slice]:
        """Index that selects the content region of a letterboxed array."""
        return (slice(self.top, self.top + self.content_h), slice(self.left, self.left + self.content_w))


def _check_hw(hw: tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (int(v) for v in hw)
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive (height, width), got {tuple(hw)}")
    return h, w


def letterbox_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> LetterboxParams:
    """Compute the letterbox placement of a ``src_hw`` image in a ``dst_hw`` canvas.

    The content is centred; when the padding is odd the extra row/column goes
    to the bottom/right. Content sizes are at least 1 pixel so extreme aspect
    ratios (e.g. 4096x1) still produce a valid mapping.
    """
    src_h, src_w = _check_hw(src_hw, "src_hw")
    dst_h, dst_w = _check_hw(dst_hw, "dst_hw")
    scale = min(dst_h / src_h, dst_w / src_w)
    content_h = min(dst_h, max(1, round(src_h * scale)))
    content_w = min(dst_w, max(1, round(src_w * scale)))
    return LetterboxParams(
        src_h=src_h,
        src_w=src_w,
        dst_h=dst_h,
        dst_w=dst_w,
        scale=scale,
        top=(dst_h - content_h) // 2,
        left=(dst_w - content_w) // 2,
        content_h=content_h,
        content_w=content_w,
    )


def _auto_interpolation(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_AREA when shrinking (anti-aliases), INTER_LINEAR when enlarging."""
    shrinking = dst_hw[0] * dst_hw[1] < src_hw[0] * src_hw[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC array, got {getattr(img, 'shape', type(img))}")
    if img.dtype not in (np.uint8, np.float32):
        raise ValueError(f"expected uint8 or float32, got {img.dtype}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {img.shape}")


def resize(img: np.ndarray, dst_hw: tuple[int, int], interpolation: int | None = None) -> np.ndarray:
    """Resize ``img`` to ``dst_hw`` keeping its layout (HxW or HxWxC, any C).

    Wraps ``cv2.resize`` to (a) keep a trailing channel axis of size 1 that
    OpenCV would drop and (b) handle more than 4 channels by resizing in
    chunks, since INTER_AREA is limited to 4.
    """
    _check_image(img)
    dst_h, dst_w = _check_hw(dst_hw, "dst_hw")
    if interpolation is None:
        interpolation = _auto_interpolation(img.shape[:2], (dst_h, dst_w))
    if img.shape[:2] == (dst_h, dst_w):
        return img.copy()
    if img.ndim == 2:
        return cv2.resize(img, (dst_w, dst_h), interpolation=interpolation)
    channels = img.shape[2]
    chunks = []
    for start in range(0, channels, _CV_MAX_CHANNELS):
        part = np.ascontiguousarray(img[:, :, start : start + _CV_MAX_CHANNELS])
        out = cv2.resize(part, (dst_w, dst_h), interpolation=interpolation)
        chunks.append(out.reshape(dst_h, dst_w, part.shape[2]))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)


def letterbox(
    img: np.ndarray, dst_hw: tuple[int, int], interpolation: int | None = None
) -> tuple[np.ndarray, LetterboxParams]:
    """Fit ``img`` into ``dst_hw`` keeping its aspect ratio; pad by edge replication.

    ``interpolation=None`` picks INTER_AREA when shrinking and INTER_LINEAR
    when enlarging; pass ``cv2.INTER_NEAREST`` for label maps. Returns the
    letterboxed array (same dtype and channel layout) and the parameters
    needed to undo it.
    """
    _check_image(img)
    params = letterbox_params(img.shape[:2], dst_hw)
    content = resize(img, (params.content_h, params.content_w), interpolation)
    if params.top == params.bottom == params.left == params.right == 0:
        return content, params
    out = cv2.copyMakeBorder(
        content, params.top, params.bottom, params.left, params.right, cv2.BORDER_REPLICATE
    )
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing axis of size 1
        out = out[:, :, None]
    return out, params


def unletterbox(img: np.ndarray, params: LetterboxParams, interpolation: int | None = None) -> np.ndarray:
    """Undo ``letterbox``: crop the content region and resize it to the source size.

    ``img`` must have the letterboxed size (``dst_h x dst_w``); it may have a
    different channel count or dtype from the original image (e.g. a model's
    float output or a single-channel mask), since only the geometry is undone.
    """
    _check_image(img)
    if img.shape[:2] != (params.dst_h, params.dst_w):
        raise ValueError(
            f"unletterbox expects a {params.dst_h}x{params.dst_w} array, got {img.shape[0]}x{img.shape[1]}"
        )
    content = img[params.content_slice]
    return resize(content, (params.src_h, params.src_w), interpolation)


def feather_sigma(model_height: int) -> float:
    """Gaussian sigma (model pixels) used to soften the try-on edit mask: 1 px per 256 rows.

    Scaling with the model height keeps the feather the same fraction of the
    image at 256x192, 512x384 and 1024x768.
    """
    return max(0.5, model_height / 256.0)
