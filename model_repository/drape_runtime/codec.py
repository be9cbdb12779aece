"""Decode untrusted image bytes into RGB arrays, failing with input-named errors.

Every request image passes through :func:`decode_image` in the preprocess
model. The function is deliberately defensive: it checks the cheap things
(size, format, header dimensions, pixel budget) before asking the decoder to do
any work, forces a full decode so truncated files fail here rather than
producing half-grey images, and turns every decoder exception into an
:class:`ImageInputError` whose message starts with the input's name. The
serving layer maps that exception to Triton's INVALID_ARGUMENT.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from drape_core import contract

__all__ = ["Limits", "DEFAULT_LIMITS", "ImageInputError", "decode_image", "encode_png", "encode_jpeg"]

# Pillow formats we accept. Camera JPEGs with several embedded pictures are
# reported as "MPO"; they are JPEGs and decode to their first (main) picture.
_PILLOW_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
_WHITE = (255, 255, 255, 255)
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # chunk type + its fixed CRC


@dataclass(frozen=True)
class Limits:
    """Input limits: encoded size in bytes, longest side and total pixels of the decoded image."""

    max_bytes: int = contract.MAX_IMAGE_BYTES
    max_side: int = contract.MAX_IMAGE_SIDE
    max_pixels: int = contract.MAX_IMAGE_PIXELS


DEFAULT_LIMITS = Limits()


class ImageInputError(ValueError):
    """A request image is unusable. The message always starts with ``"<input name>: "``."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.input_name = name
        self.reason = reason


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray, name: str) -> bytes:
    """Accept raw bytes or the uint8 array Triton hands the python backend."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageInputError(name, f"expected encoded bytes as uint8, got {data.dtype}")
        return data.tobytes()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ImageInputError(name, f"expected encoded image bytes, got {type(data).__name__}")


def _format_mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _check_encoded_size(raw: bytes, name: str, limits: Limits) -> None:
    if not raw:
        raise ImageInputError(name, "empty input (0 bytes); expected an encoded JPEG or PNG image")
    if len(raw) > limits.max_bytes:
        # Both sides in bytes too: a payload a few bytes over reads "16.0 MiB ... over the 16.0 MiB limit" otherwise.
        raise ImageInputError(
            name,
            f"encoded image is {_format_mib(len(raw))} ({len(raw)} bytes), "
            f"over the {_format_mib(limits.max_bytes)} limit ({limits.max_bytes} bytes)",
        )


def _sniff_format(raw: bytes) -> str | None:
    """Name the format from its magic bytes, so header errors can say what the input claimed to be."""
    if raw.startswith(_JPEG_MAGIC):
        return "JPEG"
    if raw.startswith(_PNG_MAGIC):
        return "PNG"
    return None


def _describe_failure(fmt: str, exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    kind = "truncated" if "truncated" in detail.lower() else "corrupt"
    return f"{kind} {fmt} ({detail})"


def _open_header(raw: bytes, name: str) -> tuple[Image.Image, str]:
    """Parse only the header; returns the lazily-decoded image and its format ("JPEG"/"PNG")."""
    sniffed = _sniff_format(raw)
    if sniffed is None:
        raise ImageInputError(name, "not a JPEG or PNG image (unrecognised leading bytes)")
    try:
        img = Image.open(io.BytesIO(raw), formats=list(contract.IMAGE_FORMATS))
    except UnidentifiedImageError:
        raise ImageInputError(name, f"corrupt {sniffed} (the header cannot be parsed)") from None
    except Image.DecompressionBombError as exc:  # header claims a gigantic size
        raise ImageInputError(name, f"{sniffed} is too large, over the pixel limits ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - header parsers raise many kinds
        raise ImageInputError(name, _describe_failure(sniffed, exc)) from None
    fmt = _PILLOW_FORMATS.get(img.format or "")
    if fmt is None:
        img.close()
        raise ImageInputError(name, f"unsupported image format {img.format!r}; expected JPEG or PNG")
    return img, fmt


def _check_complete(raw: bytes, fmt: str, name: str) -> None:
    """Reject PNGs cut before their IEND chunk.

    Pillow stops reading once it has all pixels, so a PNG that lost only its
    trailing chunk decodes "fine"; it is still a truncated upload. Data after
    IEND is tolerated (some tools append metadata there).
    """
    if fmt == "PNG" and raw.rfind(_PNG_IEND) < 0:
        raise ImageInputError(name, "truncated PNG (no IEND chunk)")


def _check_dimensions(img: Image.Image, fmt: str, name: str, limits: Limits) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageInputError(name, f"{fmt} has no pixels ({width}x{height})")
    if max(width, height) > limits.max_side:
        raise ImageInputError(
            name, f"{fmt} is {width}x{height} pixels, over the {limits.max_side} pixel limit per side"
        )
    if width * height > limits.max_pixels:
        raise ImageInputError(
            name, f"{fmt} has {width * height} pixels, over the {limits.max_pixels} pixel budget"
        )


def _full_load(img: Image.Image, fmt: str, name: str) -> None:
    """Decode every pixel now so truncation/corruption surfaces as an error here."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global: we would silently accept junk
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to decode untrusted images")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow/zlib raise OSError, ValueError, SyntaxError, zlib.error, ...
        raise ImageInputError(name, _describe_failure(fmt, exc)) from None


def _exif_oriented(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag.

    A broken EXIF block on an otherwise decodable photo is common (editors
    rewrite it badly); it is not a reason to fail the request, so the image is
    then used as stored.
    """
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - malformed EXIF must not fail a decodable image
        return img


def _sixteen_bit_to_rgb(img: Image.Image) -> np.ndarray:
    """Scale 16-bit grayscale (modes I;16*, I) to 8 bit by value, not by clipping.

    Pillow's own ``convert("L")`` clips 16-bit values at 255, which turns most
    16-bit PNGs white.
    """
    arr = np.asarray(img).astype(np.int64)
    arr = np.clip(arr, 0, 65535)
    gray = ((arr * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any JPEG/PNG mode to an HxWx3 uint8 RGB array; transparency goes over white."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(img)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, ...
    return np.array(img, dtype=np.uint8)


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray, name: str, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode JPEG/PNG bytes into an EXIF-oriented ``HxWx3`` uint8 RGB array.

    ``name`` is the request input's name; every failure raises
    :class:`ImageInputError` with a message starting with it, e.g.
    ``"person_image: truncated JPEG (image file is truncated ...)"``.
    """
    raw = _as_bytes(data, name)
    _check_encoded_size(raw, name, limits)
    img, fmt = _open_header(raw, name)
    try:
        _check_dimensions(img, fmt, name, limits)
        _check_complete(raw, fmt, name)
        _full_load(img, fmt, name)
        oriented = _exif_oriented(img)
        try:
            return _to_rgb_array(oriented)
        except Exception as exc:  # noqa: BLE001 - exotic modes/palettes
            raise ImageInputError(name, f"cannot convert {fmt} mode {oriented.mode!r} to RGB ({exc})") from None
    finally:
        img.close()


def _to_pil(img: np.ndarray) -> Image.Image:
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 uint8 array, got {img.dtype} {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(img))


def encode_png(img: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a uint8 array (gray, RGB or RGBA) as PNG. Level 1 favours speed over size."""
    buf = io.BytesIO()
    _to_pil(img).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_jpeg(img: np.ndarray, quality: int = 95) -> bytes:
    """Encode a uint8 gray or RGB array as JPEG."""
    pil = _to_pil(img)
    if pil.mode == "RGBA":
        raise ValueError("JPEG has no alpha channel; drop it or encode as PNG")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
