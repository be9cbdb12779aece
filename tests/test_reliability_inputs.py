"""Bad input, CI-sized (issue #8): the malformed-request corpus against the real server, the byte limit applied
before decoding, and property-based fuzzing of the decode/letterbox code in-process.

The full corpus (>= 1000 requests) is ``python -m tests.reliability.bad_inputs run``; RELIABILITY.md has its numbers.
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from drape_core import contract
from drape_runtime import codec
from drape_runtime.codec import ImageInputError, Limits, decode_image
from drape_core.geometry import letterbox, letterbox_params, unletterbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.reliability import bad_inputs  # noqa: E402

NAME = "person_image"
# Pillow warns about huge declared sizes before the codec refuses them; expected here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def fuzz(examples: int) -> settings:
    """Bounded example counts keep the file fast; no deadline because the shared CI machine is noisy."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ the corpus against the real server


@pytest.fixture(scope="module")
def pool():
    return bad_inputs.Pool(7)


def _target(server) -> bad_inputs.Target:
    return bad_inputs.Target(server.http_url, server.grpc_url, server.process.pid, server.log_file)


@pytest.mark.server
def test_malformed_corpus_is_refused_clearly_and_the_server_survives(real_server, pool):
    config = bad_inputs.CorpusConfig(seed=8, per_category=3)
    report = bad_inputs.run_corpus(_target(real_server), config, check_every=28, progress=False, pool=pool)

    assert len(report.records) == config.n_cases * 2 >= 150
    covered = {(r.category, r.ensemble, r.protocol) for r in report.records}
    assert len(covered) == len(bad_inputs.CATEGORIES) * 2 * 2
    assert {r.bad for r in report.records} >= {"a", "b", "both"}
    bad = [f"{v.case} {v.protocol} {v.variant}: {v.status} {v.message[:160]}" for v in report.violations]
    assert not bad, "\n".join(bad)
    assert len(report.checks) >= 3 and all(c.ok for c in report.checks), [c.problems for c in report.checks]
    assert report.checks[-1].max_abs_diff <= 1
    assert report.server_alive and report.stubs_at_start and report.stubs_at_start == report.stubs_at_end
    assert not report.log_alarms, report.log_alarms
    assert report.passed


@pytest.mark.server
@pytest.mark.parametrize("protocol", bad_inputs.PROTOCOLS)
def test_oversize_bomb_gets_the_size_answer_over_both_protocols(real_server, pool, protocol):
    """A valid PNG over the byte limit that would decode to 4096x4096: the server answers with the size message,
    which only the byte check (the first step of decode_image) produces."""
    bomb = bad_inputs.oversize_png_bomb()
    assert len(bomb) > contract.MAX_IMAGE_BYTES
    spec = contract.RECOLOR
    clients = bad_inputs.Clients(_target(real_server))
    try:
        status, message, _, _ = clients.send(protocol, spec.name, [
            bad_inputs.Tensor(spec.input_names[0], "UINT8", (1, len(pool.person_jpeg)), pool.person_jpeg),
            bad_inputs.Tensor(spec.input_names[1], "UINT8", (1, len(bomb)), bomb)])
    finally:
        clients.close()
    assert status in bad_inputs.INVALID, (status, message)
    assert f"still_image: encoded image is {len(bomb) / 2**20:.1f} MiB ({len(bomb)} bytes), over the 16.0 MiB limit" \
        in message, message


def test_byte_limit_is_checked_before_any_decoding(monkeypatch):
    """Pillow is never asked to open a payload over the limit; the same bytes are a real 4096x4096 image."""
    bomb = bad_inputs.oversize_png_bomb()
    assert decode_image(bomb, NAME, Limits(max_bytes=1 << 31)).shape == (4096, 4096, 3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("Image.open called on an oversize payload")

    monkeypatch.setattr(codec.Image, "open", no_decoding)
    with pytest.raises(ImageInputError, match=r"^person_image: encoded image is .* over the 16.0 MiB limit"):
        decode_image(bomb, NAME)


def test_clear_message_rule_can_fail():
    """The judge rejects an answer that is not INVALID_ARGUMENT, omits the input, or gives no reason."""
    case = next(c for c in bad_inputs.iter_cases(bad_inputs.CorpusConfig(per_category=1, categories=("truncated",),
                                                                          ensembles=("tryon",))))
    good = "in ensemble 'tryon', person_image: truncated JPEG (image file is truncated)"
    assert bad_inputs.judge(case, "grpc", "StatusCode.INVALID_ARGUMENT", good, 0.01).ok
    assert not bad_inputs.judge(case, "grpc", "StatusCode.INTERNAL", good, 0.01).ok
    assert not bad_inputs.judge(case, "http", "400", "in ensemble 'tryon': truncated JPEG", 0.01).ok
    assert not bad_inputs.judge(case, "http", "400", "person_image2: truncated JPEG", 0.01).ok
    assert not bad_inputs.judge(case, "http", "400", "person_image: something went wrong", 0.01).ok
    assert not bad_inputs.judge(case, "grpc", "OK", "", 0.01).ok


def test_corpus_is_seeded_and_image_cases_are_really_invalid(pool):
    """Same seed, same cases; every bad image payload is refused by the serving codec itself."""
    config = bad_inputs.CorpusConfig(seed=3, per_category=2, categories=bad_inputs.IMAGE_CATEGORIES[:-1])
    first = list(bad_inputs.iter_cases(config, bad_inputs.Generator(pool, 3)))
    again = list(bad_inputs.iter_cases(config, bad_inputs.Generator(pool, 3)))
    assert [c.tensors for c in first] == [c.tensors for c in again]
    for case in first:
        for t in case.tensors:
            if t.name in case.names:
                with pytest.raises(ImageInputError):
                    decode_image(t.data, t.name)


# ------------------------------------------------------------------------------------- decode: property fuzzing

SMALL = Limits(max_bytes=60_000, max_side=64, max_pixels=64 * 40)


def _seed_images() -> list[bytes]:
    """Small valid images in the modes the codec converts, some over SMALL's side/pixel limits."""
    seeds = bad_inputs.fuzz_seeds(5)
    big = Image.fromarray(np.full((20, 80, 3), 90, np.uint8))  # over max_side=64
    square = Image.fromarray(np.full((60, 60), 30, np.uint8))  # within the side, over the pixel budget
    extra = [bad_inputs._save(big, "PNG"), bad_inputs._save(big, "JPEG"), bad_inputs._save(square, "PNG")]
    return list(seeds.values()) + extra


SEEDS = _seed_images()


def _assert_decode_contract(data: bytes, limits: Limits = SMALL) -> None:
    """Either an RGB uint8 image within the limits, or the codec's own input error naming the input."""
    try:
        img = decode_image(data, NAME, limits)
    except ImageInputError as exc:
        assert str(exc).startswith(f"{NAME}: ") and exc.input_name == NAME and exc.reason, str(exc)
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    h, w = img.shape[:2]
    assert 1 <= h <= limits.max_side and 1 <= w <= limits.max_side and h * w <= limits.max_pixels, img.shape


@fuzz(300)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_fail_naming_the_input(data):
    _assert_decode_contract(data)


@fuzz(300)
@given(st.sampled_from([b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n",
                        SEEDS[0][:200], SEEDS[4][:33]]), st.binary(max_size=3000))
def test_valid_header_then_anything(head, tail):
    _assert_decode_contract(head + tail)


_MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                      st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.binary(min_size=1, max_size=32))


@fuzz(400)
@given(st.sampled_from(range(len(SEEDS))), st.lists(_MUTATION, min_size=1, max_size=8))
def test_mutated_valid_images_decode_or_fail_naming_the_input(seed_index, mutations):
    data = bytearray(SEEDS[seed_index])
    for op, where, value, blob in mutations:
        if not data:
            break
        pos = int(where * len(data))
        if op == "flip":
            data[pos] ^= 1 << (value % 8)
        elif op == "set":
            data[pos] = value
        elif op == "insert":
            data[pos:pos] = blob
        elif op == "delete":
            del data[pos:pos + 1 + value % 64]
        else:
            del data[max(1, pos):]
    _assert_decode_contract(bytes(data))


def _png_header_only(width: int, height: int, depth: int, ctype: int) -> bytes:
    return bad_inputs._png(width, height, depth, ctype, idat=zlib.compress(b"\0" * 64))


@fuzz(150)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.sampled_from([(8, 0), (16, 0), (8, 2), (16, 6), (1, 0),
                                                                           (8, 3), (4, 4)]))
def test_declared_png_dimensions_never_escape_the_limits(width, height, depth_ctype):
    """Whatever IHDR claims (including invalid depth/colour pairs), the answer respects the default limits."""
    _assert_decode_contract(_png_header_only(width, height, *depth_ctype), codec.DEFAULT_LIMITS)


@fuzz(150)
@given(st.integers(0, 65535), st.integers(0, 65535))
def test_declared_jpeg_dimensions_never_escape_the_limits(height, width):
    jpeg = bytearray(SEEDS[0])
    at = bytes(jpeg).find(b"\xff\xc0")
    jpeg[at + 5:at + 9] = struct.pack(">HH", height, width)
    _assert_decode_contract(bytes(jpeg), codec.DEFAULT_LIMITS)


# ----------------------------------------------------------------------------------- letterbox: property fuzzing

NETWORK_SIZES = [*contract.SUPPORTED_RESOLUTIONS, (64, 48), (33, 17)]


def _smooth(h: int, w: int, channels: int | None, content_hw: tuple[int, int], dtype) -> np.ndarray:
    """Half a sine period along each axis that both the source and the letterboxed content resolve (>= 16 px);
    constant along an axis that one of them cannot resolve, where detail is lost by construction."""
    y = np.linspace(0.0, 1.0, h)[:, None]
    x = np.linspace(0.0, 1.0, w)[None, :]
    fy = np.sin(np.pi * y) if min(h, content_hw[0]) >= 16 else np.ones_like(y)
    fx = np.cos(np.pi * x) if min(w, content_hw[1]) >= 16 else np.ones_like(x)
    plane = 127.0 + 100.0 * fy * fx
    img = plane if channels is None else np.repeat(plane[:, :, None], channels, axis=2) + np.arange(channels)
    return img.round().astype(dtype)


@fuzz(250)
@given(st.integers(1, 1200), st.integers(1, 1200), st.sampled_from(NETWORK_SIZES),
       st.sampled_from([None, 1, 3, 4, 20]), st.sampled_from([np.uint8, np.float32]))
def test_letterbox_fits_the_network_and_inverts(h, w, dst, channels, dtype):
    params = letterbox_params((h, w), dst)
    img = _smooth(h, w, channels, (params.content_h, params.content_w), dtype)
    boxed, got = letterbox(img, dst)
    assert got == params
    assert boxed.dtype == img.dtype and boxed.shape == (*dst, *img.shape[2:])
    assert 1 <= params.content_h <= dst[0] and 1 <= params.content_w <= dst[1]
    assert params.content_h == dst[0] or params.content_w == dst[1]  # touches the canvas on one axis
    back = unletterbox(boxed, params)
    assert back.shape == img.shape and back.dtype == img.dtype
    err = np.abs(back.astype(np.float64) - img.astype(np.float64))
    assert err.mean() <= 1.0 and err.max() <= 12, (err.mean(), err.max())


@fuzz(150)
@given(st.integers(1, 4096), st.integers(1, 4), st.booleans(), st.sampled_from(NETWORK_SIZES), st.integers(0, 255))
def test_letterbox_extreme_aspects_are_exact_on_flat_images(long_side, short_side, tall, dst, value):
    """4096x1 and friends: a flat image letterboxes to a flat canvas (replicate padding) and comes back exactly."""
    hw = (long_side, short_side) if tall else (short_side, long_side)
    img = np.full((*hw, 3), value, np.uint8)
    boxed, params = letterbox(img, dst)
    assert boxed.shape == (*dst, 3) and (boxed == value).all()
    assert (unletterbox(boxed, params) == img).all()


def test_decoded_images_letterbox_to_the_network_size(pool):
    """The decode -> letterbox path of preprocess on every valid pool image."""
    for data in pool.images.values():
        img = decode_image(data, NAME)
        boxed, params = letterbox(img, contract.DEFAULT_RESOLUTION)
        assert boxed.shape == (*contract.DEFAULT_RESOLUTION, 3)
        assert unletterbox(boxed, params).shape == img.shape


def test_fuzz_harness_holds_on_its_seeds_and_catches_a_broken_codec(monkeypatch):
    """The atheris target (bad_inputs.fuzz_one) passes on its seeds and on junk, and fails when the codec breaks
    its contract (wrong output, foreign exception, unnamed error)."""
    seeds = bad_inputs.fuzz_seeds(7)
    assert all(decode_image(v, NAME).shape == (40, 30, 3) for v in seeds.values())
    for data in [*seeds.values(), b"\x89PNG\r\n\x1a\n" + b"\0" * 100, b""]:
        bad_inputs.fuzz_one(data)
    monkeypatch.setattr(bad_inputs, "decode_image", lambda *a: np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(AssertionError):
        bad_inputs.fuzz_one(seeds["png"])

    def foreign(*a):
        raise ValueError("zlib says no")

    monkeypatch.setattr(bad_inputs, "decode_image", foreign)
    with pytest.raises(ValueError):
        bad_inputs.fuzz_one(seeds["png"])

    def unnamed(*a):
        raise ImageInputError("still_image", "corrupt")

    monkeypatch.setattr(bad_inputs, "decode_image", unnamed)
    with pytest.raises(AssertionError, match="does not name the input"):
        bad_inputs.fuzz_one(seeds["png"])
