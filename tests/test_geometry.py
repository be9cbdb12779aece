"""Letterbox geometry: placement, padding, and exact round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from drape_core.geometry import LetterboxParams, letterbox, letterbox_params, resize, unletterbox

RESOLUTIONS = [(256, 192), (512, 384), (1024, 768)]


def _gradient(h: int, w: int, c: int | None = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth, non-symmetric image so resampling errors stay small and misplacement shows."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = (x / max(w - 1, 1)) * 0.6 + (y / max(h - 1, 1)) * 0.4
    if c is None:
        img = base
    else:
        img = np.stack([np.roll(base, k * 7, axis=1) for k in range(c)], axis=2)
    return (img * 255).round().astype(np.uint8) if dtype == np.uint8 else img.astype(np.float32)


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        # same aspect: no padding
        ((512, 384), (256, 192), dict(content_h=256, content_w=192, top=0, left=0)),
        # wide source: padded top/bottom
        ((250, 333), (256, 192), dict(content_h=144, content_w=192, top=56, left=0)),
        # tall source: padded left/right, odd padding goes right
        ((1000, 100), (256, 192), dict(content_h=256, content_w=26, top=0, left=83)),
        # extreme aspect ratio keeps at least one pixel of content
        ((1, 4096), (256, 192), dict(content_h=1, content_w=192, top=127, left=0)),
        ((4096, 1), (256, 192), dict(content_h=256, content_w=1, top=0, left=95)),
    ],
)
def test_letterbox_params_placement(src, dst, expected):
    p = letterbox_params(src, dst)
    for key, value in expected.items():
        assert getattr(p, key) == value, (key, p)
    assert p.top + p.content_h + p.bottom == p.dst_h
    assert p.left + p.content_w + p.right == p.dst_w
    assert p.bottom >= p.top and p.right >= p.left


def test_letterbox_params_rejects_empty_sizes():
    with pytest.raises(ValueError, match="src_hw"):
        letterbox_params((0, 10), (256, 192))
    with pytest.raises(ValueError, match="dst_hw"):
        letterbox_params((10, 10), (256, 0))


@pytest.mark.parametrize("dst", RESOLUTIONS)
@pytest.mark.parametrize("src", [(250, 333), (1024, 768), (4096, 37), (3, 5), (1, 1)])
@pytest.mark.parametrize("layout", ["hw", "hwc3", "hwc1", "hwc20"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_round_trip_shapes_and_dtypes(src, dst, layout, dtype):
    channels = {"hw": None, "hwc3": 3, "hwc1": 1, "hwc20": 20}[layout]
    img = _gradient(*src, c=channels, dtype=dtype)
    boxed, params = letterbox(img, dst)
    assert boxed.shape == dst + img.shape[2:]
    assert boxed.dtype == img.dtype
    back = unletterbox(boxed, params)
    assert back.shape == img.shape
    assert back.dtype == img.dtype


@pytest.mark.parametrize("dst", RESOLUTIONS)
def test_identity_when_sizes_match(dst):
    img = _gradient(*dst)
    boxed, params = letterbox(img, dst)
    assert params == LetterboxParams(*dst, *dst, 1.0, 0, 0, *dst)
    np.testing.assert_array_equal(boxed, img)
    np.testing.assert_array_equal(unletterbox(boxed, params), img)


@pytest.mark.parametrize("src", [(128, 96), (64, 48), (32, 24)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_round_trip_exact_for_exact_integer_factors(src, dtype):
    """Same aspect ratio, integer scale, nearest both ways: pixel-exact round trip."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, src + (3,)).astype(dtype)
    boxed, params = letterbox(img, (256, 192), interpolation=cv2.INTER_NEAREST)
    assert (params.top, params.left, params.content_h, params.content_w) == (0, 0, 256, 192)
    back = unletterbox(boxed, params, interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(back, img)


def test_round_trip_exact_for_padded_integer_factor():
    """Padding is cropped away exactly: 128x48 -> 2x -> 256x96 content padded into 256x192."""
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (128, 48, 3)).astype(np.uint8)  # 2x -> 256x96, padded left/right
    boxed, params = letterbox(img, (256, 192), interpolation=cv2.INTER_NEAREST)
    assert (params.content_h, params.content_w, params.left, params.right) == (256, 96, 48, 48)
    np.testing.assert_array_equal(boxed[:, 48:144], np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))
    np.testing.assert_array_equal(unletterbox(boxed, params, interpolation=cv2.INTER_NEAREST), img)


def test_round_trip_exact_for_constant_image_any_size():
    """Any interpolation of a constant is the constant: the round trip is exact at odd sizes too."""
    for src in [(333, 250), (4096, 1), (7, 3000), (1, 1)]:
        img = np.full(src + (3,), 173, np.uint8)
        boxed, params = letterbox(img, (256, 192))
        assert (boxed == 173).all()  # replicate padding, no black frame
        np.testing.assert_array_equal(unletterbox(boxed, params), img)


def test_padding_replicates_edges():
    img = np.zeros((50, 200, 3), np.uint8)
    img[0] = 10  # top row
    img[-1] = 200  # bottom row
    boxed, p = letterbox(img, (256, 192))
    assert p.top > 0 and p.bottom > 0
    assert (boxed[: p.top] == boxed[p.top]).all()
    assert (boxed[p.top + p.content_h :] == boxed[p.top + p.content_h - 1]).all()


def test_smooth_round_trip_is_close():
    img = _gradient(1000, 700)
    boxed, params = letterbox(img, (512, 384))
    back = unletterbox(boxed, params)
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 1.0


def test_auto_interpolation_area_when_shrinking():
    """Shrinking must anti-alias: a 1-px checkerboard averages to grey, not aliasing to black/white."""
    img = ((np.indices((512, 384)).sum(0) % 2) * 255).astype(np.uint8)
    boxed, _ = letterbox(img, (256, 192))
    assert np.abs(boxed.astype(int) - 127).max() <= 1


def test_unletterbox_checks_size():
    _, params = letterbox(np.zeros((100, 100), np.uint8), (256, 192))
    with pytest.raises(ValueError, match="256x192"):
        unletterbox(np.zeros((128, 96), np.uint8), params)


def test_rejects_unsupported_arrays():
    with pytest.raises(ValueError, match="uint8 or float32"):
        letterbox(np.zeros((10, 10), np.float64), (256, 192))
    with pytest.raises(ValueError, match="HxW"):
        letterbox(np.zeros((10,), np.uint8), (256, 192))


def test_resize_keeps_single_channel_axis_and_many_channels():
    assert resize(np.zeros((10, 10, 1), np.float32), (20, 30)).shape == (20, 30, 1)
    out = resize(np.arange(10 * 10 * 9, dtype=np.float32).reshape(10, 10, 9), (5, 5))
    assert out.shape == (5, 5, 9)
    # chunked resizing must keep channel order
    ref = np.stack([resize(np.ascontiguousarray(np.arange(900, dtype=np.float32).reshape(10, 10, 9)[:, :, k]), (5, 5)) for k in range(9)], axis=2)
    np.testing.assert_allclose(out, ref)
