"""Turn whatever an app holds (a path, bytes, a numpy array, a PIL image) into the encoded bytes the contract wants.

Files and bytes are sent exactly as they are: the server decodes and validates them (and applies EXIF
orientation), so the client never re-encodes a JPEG and loses quality. Arrays and PIL images are encoded as
PNG at the fastest compression level: lossless, and encoding cost stays small next to the request.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .errors import BadInputError

__all__ = ["ImageLike", "encode", "describe"]

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Image.Image]


def describe(image: ImageLike) -> str:
    """A short label for error messages and logs: the path, or the kind and size of the in-memory image."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} bytes>"
    if isinstance(image, np.ndarray):
        return f"<ndarray {image.dtype} {'x'.join(map(str, image.shape))}>"
    if isinstance(image, Image.Image):
        return f"<PIL {image.mode} {image.width}x{image.height}>"
    return f"<{type(image).__name__}>"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode(image: ImageLike, name: str) -> bytes:
    """Bytes to send as input ``name``; raises :class:`BadInputError` naming the input when ``image`` cannot be sent.

    Paths are read (a missing file is a bad input, not an ``OSError`` from deep inside a batch); arrays must be
    uint8 ``HxW``, ``HxWx1``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise BadInputError(f"{name}: cannot read {path}: {exc.strerror or exc}", input_name=name) from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, np.ndarray):
        ok = image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
        if not ok or image.size == 0:
            raise BadInputError(f"{name}: numpy image must be uint8 HxW, HxWx1, HxWx3 or HxWx4, got {describe(image)}",
                                input_name=name)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        return _png(Image.fromarray(np.ascontiguousarray(image)))
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
            image = image.convert("RGB")  # CMYK, YCbCr, F, ...: PNG cannot hold them
        return _png(image)
    raise BadInputError(f"{name}: unsupported image type {type(image).__name__} "
                        "(path, bytes, numpy array or PIL image)", input_name=name)
