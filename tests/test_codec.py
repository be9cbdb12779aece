"""decode_image: every supported mode becomes RGB uint8; every bad input fails naming the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from drape_core import contract
from drape_runtime.codec import DEFAULT_LIMITS, ImageInputError, Limits, decode_image, encode_jpeg, encode_png

NAME = "person_image"


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _rejects(data, match: str, limits: Limits = DEFAULT_LIMITS, name: str = NAME) -> ImageInputError:
    with pytest.raises(ImageInputError) as info:
        decode_image(data, name, limits)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    assert match.lower() in message.lower(), message
    assert info.value.input_name == name
    return info.value


# ----------------------------------------------------------------------------- good


def test_png_round_trip_is_exact():
    img = _rgb(31, 17)
    out = decode_image(encode_png(img), NAME)
    assert out.dtype == np.uint8 and out.shape == (31, 17, 3)
    np.testing.assert_array_equal(out, img)


def test_jpeg_decodes_close_to_source():
    img = np.full((40, 60, 3), (200, 30, 90), np.uint8)
    out = decode_image(encode_jpeg(img), NAME)
    assert out.shape == (40, 60, 3)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 3


def test_accepts_bytes_bytearray_memoryview_and_uint8_arrays():
    data = encode_png(_rgb(5, 4))
    for variant in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert decode_image(variant, NAME).shape == (5, 4, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_one_by_one(fmt):
    out = decode_image(_save(Image.new("RGB", (1, 1), (12, 200, 99)), fmt), NAME)
    assert out.shape == (1, 1, 3)


def test_max_side_is_accepted():
    """4096x4096 is inside the limit (an all-black PNG keeps this fast and small)."""
    side = contract.MAX_IMAGE_SIDE
    data = _save(Image.new("L", (side, side)), "PNG", compress_level=9)
    out = decode_image(data, NAME)
    assert out.shape == (side, side, 3)


@pytest.mark.parametrize("size", [(4097, 10), (10, 4097)])
def test_side_over_limit_rejected_from_header(size):
    data = _save(Image.new("L", size), "PNG", compress_level=9)
    _rejects(data, "over the 4096 pixel limit per side")


def test_side_limit_checked_before_decoding():
    """A header claiming a huge size is rejected even though the pixel data is garbage."""
    good = _save(Image.new("L", (4097, 8)), "PNG")
    broken = good[:60] + b"\x00" * 40  # keep IHDR, destroy the rest
    _rejects(broken, "over the 4096 pixel limit")


def test_gigantic_header_claim_is_a_size_error():
    """A 100000x100000 PNG header (a classic decompression bomb) fails as too large, instantly."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    _rejects(data, "too large")


def test_pixel_budget():
    data = _save(Image.new("L", (100, 100)), "PNG")
    _rejects(data, "pixel budget", Limits(max_pixels=9999))


def test_grayscale_png_and_jpeg():
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (3, 1))
    for fmt in ("PNG", "JPEG"):
        out = decode_image(_save(Image.fromarray(gray, "L"), fmt), NAME)
        assert out.shape == gray.shape + (3,)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        assert np.abs(out[..., 0].astype(int) - gray).max() <= (0 if fmt == "PNG" else 4)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535, 1000]], dtype=np.uint16)
    data = _save(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_image(data, NAME)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 4])
    assert (out[..., 0] == out[..., 2]).all()


def test_cmyk_jpeg():
    rgb = np.full((16, 16, 3), (255, 0, 0), np.uint8)
    data = _save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, NAME)
    assert out.shape == (16, 16, 3)
    assert out[..., 0].mean() > 230 and out[..., 1].mean() < 25 and out[..., 2].mean() < 25


def test_rgba_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black -> mid grey
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), NAME)
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    assert np.abs(out[1, 0].astype(int) - 127).max() <= 1


def test_gray_alpha_is_composited_over_white():
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    out = decode_image(_save(la, "PNG"), NAME)
    np.testing.assert_array_equal(out[0], [(255, 255, 255), (0, 0, 0)])


def test_palette_png_with_and_without_transparency():
    pal = Image.fromarray(_rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = decode_image(_save(pal, "PNG"), NAME)
    np.testing.assert_array_equal(out, np.array(pal.convert("RGB")))

    pal_t = Image.new("P", (2, 1))
    pal_t.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal_t.putdata([0, 1])
    out = decode_image(_save(pal_t, "PNG", transparency=0), NAME)
    np.testing.assert_array_equal(out[0], [(255, 255, 255), (200, 100, 50)])


def test_bilevel_png():
    img = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    out = decode_image(_save(img, "PNG"), NAME)
    np.testing.assert_array_equal(out[0], [(0, 0, 0), (255, 255, 255)])


@pytest.mark.parametrize("orientation, expected_shape", [(1, (20, 40, 3)), (6, (40, 20, 3)), (8, (40, 20, 3)), (3, (20, 40, 3))])
def test_exif_orientation_is_applied(orientation, expected_shape):
    """A 40x20 (wide) stored image: orientations 6/8 turn it portrait; 3 flips it."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 255, 255)  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(data, NAME)
    assert out.shape == expected_shape
    if orientation == 1:
        assert out[:, :10].mean() > 200 and out[:, 30:].mean() < 50
    if orientation == 3:  # rotated 180: white is now on the right
        assert out[:, 30:].mean() > 200 and out[:, :10].mean() < 50
    if orientation == 6:  # rotate 90 clockwise to display: stored left goes to the top
        assert out[:10].mean() > 200 and out[30:].mean() < 50
    if orientation == 8:  # rotate 90 counter-clockwise: stored left goes to the bottom
        assert out[30:].mean() > 200 and out[:10].mean() < 50


def test_broken_exif_does_not_fail_a_decodable_image():
    data = _save(Image.fromarray(_rgb(8, 8)), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    assert decode_image(data, NAME).shape == (8, 8, 3)


# ------------------------------------------------------------------------------ bad


def test_empty():
    _rejects(b"", "empty input")
    _rejects(np.zeros((0,), np.uint8), "empty input")


def test_random_bytes():
    _rejects(np.random.default_rng(3).bytes(5000), "not a JPEG or PNG")


def test_text_and_other_formats():
    _rejects(b"hello, I am not an image", "not a JPEG or PNG")
    _rejects(_save(Image.new("RGB", (4, 4)), "GIF"), "not a JPEG or PNG")
    _rejects(_save(Image.new("RGB", (4, 4)), "BMP"), "not a JPEG or PNG")


def test_over_max_bytes_rejected_before_decoding():
    """17 MiB of junk behind a valid JPEG signature: the size check fires, not the decoder."""
    data = b"\xff\xd8\xff" + b"\x00" * (contract.MAX_IMAGE_BYTES + 1024 * 1024)
    err = _rejects(data, "over the 16.0 MiB limit")
    assert "17.0 MiB" in str(err)


def test_exactly_max_bytes_is_not_a_size_error():
    data = b"\xff\xd8\xff" + b"\x00" * (contract.MAX_IMAGE_BYTES - 3)
    err = _rejects(data, "JPEG")
    assert "limit" not in str(err)


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.1])
def test_truncated_jpeg(keep):
    data = encode_jpeg(_rgb(120, 90))
    _rejects(data[: int(len(data) * keep)], "truncated JPEG")


def test_jpeg_cut_inside_header():
    data = encode_jpeg(_rgb(120, 90))
    _rejects(data[:12], "JPEG")


@pytest.mark.parametrize("cut", [2, 12, 5000])
def test_truncated_png(cut):
    data = encode_png(_rgb(120, 90))
    _rejects(data[:-cut], "truncated PNG")


def test_png_with_trailing_data_is_fine():
    img = _rgb(10, 10)
    np.testing.assert_array_equal(decode_image(encode_png(img) + b"appended-metadata", NAME), img)


def test_corrupt_png_data():
    data = bytearray(encode_png(_rgb(64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 200] = b"\xaa" * 160
    _rejects(bytes(data), "PNG")


def test_error_names_the_given_input():
    err = _rejects(b"nope", "not a JPEG or PNG", name="still_image")
    assert str(err).startswith("still_image: ")


def test_wrong_array_dtype():
    _rejects(np.zeros(10, np.float32), "uint8")


def test_encode_helpers_validate():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        encode_jpeg(np.zeros((4, 4, 4), np.uint8))


# ------------------------------------------------------- limits come from the header, before any pixel work


def _jpeg_with_header_size(height: int, width: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 header is patched to claim ``height x width``: tiny bytes, huge claim."""
    data = bytearray(_save(Image.fromarray(_rgb(16, 16)), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_jpeg_header_over_side_limit_rejected_without_decoding():
    err = _rejects(_jpeg_with_header_size(3000, 5000), "over the 4096 pixel limit per side")
    assert "5000x3000" in str(err)


def test_jpeg_decompression_bomb_header_is_a_size_error():
    """60000x60000 claimed (3.6 G pixels): Pillow's own bomb guard or our limit fires, never the decoder."""
    _rejects(_jpeg_with_header_size(60000, 60000), "too large" if Image.MAX_IMAGE_PIXELS else "limit")


def test_pixel_budget_checked_from_the_header_before_decoding():
    """Within the side limit but over the pixel budget: refused as such, though the pixel data is bogus."""
    err = _rejects(_jpeg_with_header_size(2000, 2000), "pixel budget", Limits(max_pixels=1_000_000))
    assert "truncated" not in str(err) and "corrupt" not in str(err)


def test_sixteen_bit_rgb_png_keeps_the_high_byte():
    import cv2

    rgb16 = (np.random.default_rng(4).random((6, 5, 3)) * 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb16[:, :, ::-1])  # OpenCV writes BGR
    assert ok
    out = decode_image(buf.tobytes(), NAME)
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))


def test_pillow_bomb_limit_is_above_ours():
    """Our pixel budget must fire first: Pillow's guard would raise on a different, larger threshold."""
    assert Image.MAX_IMAGE_PIXELS is None or contract.MAX_IMAGE_PIXELS <= Image.MAX_IMAGE_PIXELS
