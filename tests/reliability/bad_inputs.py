"""Bad input: a seeded corpus of malformed requests against both ensembles over both protocols.

Every case is generated from ``--seed`` (nothing is stored) and sent to the served ``tryon`` and ``recolor``
ensembles over HTTP and gRPC with raw ``tritonclient``, because the thin client refuses to build most of these
requests. The corpus covers the image bytes (fuzzed bytes, mutated and truncated JPEG/PNG, a valid header followed by
garbage, zero length, other formats, huge declared dimensions, decompression bombs, payloads over
``contract.MAX_IMAGE_BYTES``) and the tensors themselves (wrong dtype, wrong shape, missing, extra and misnamed
inputs); each case makes one input bad, the other, or both.

Acceptance, checked per request and counted:

* the status is INVALID_ARGUMENT (gRPC) / 400 (HTTP);
* the message is *clear*: it names the offending tensor (see :attr:`Case.names`: the bad input, or the unknown
  tensor for extra/misnamed inputs; either input of a pair whose batch sizes disagree, since that error is about
  the pair; only for request-level errors with no offending tensor, a batch over ``max_batch_size`` for every
  input or an extra input with a blank name, the ensemble) as a whole word, and it matches the category's reason
  pattern (:data:`REASONS`), i.e. it says what was wrong.

And for the server, after every ``--check-every`` cases and at the end: a known-good request per ensemble and
protocol returns the reference answer taken at the start (every value within 1 level), the server is live and
ready, the tritonserver process is alive, its python-backend stub processes are the very same PIDs as at the start
(no crash, no restart), and its log shows no stub/segfault errors. The memory of the server and its stubs (RSS
from /proc, plus the python backend's /dev/shm regions) is sampled throughout and reported per category.

``--size-probe`` (on by default) also proves the byte limit is applied before decoding: a valid PNG over the limit
that decodes to 4096x4096 is answered with the size message, and its server latency is printed beside the time the
same bytes take to decode in-process; a 64 MiB payload shows what the transport lets through. ``--transport-via
gateway`` (or ``both``) sends those transport payloads through the request-size gateway (``drape_serving.gateway``:
nginx in front of the server, started here; needs ``apt-get install nginx``) and requires that it refuses them
(413 / INVALID_ARGUMENT naming its limit) with the server's shm regions unchanged; ``both`` then sends them direct.

``fuzz`` runs a coverage-guided atheris harness over the decode/letterbox code in-process (``pip install atheris``).

Examples (from the repository root)::

    python -m tests.reliability.bad_inputs run --per-category 20 --out build/reliability/bad_inputs.json
    python -m tests.reliability.bad_inputs run --http-url localhost:8000 --grpc-url localhost:8001
    python -m tests.reliability.bad_inputs run --categories oversize --per-category 2 --transport-mib 64,300 \
        --transport-via both
    python -m tests.reliability.bad_inputs fuzz --runs 20000
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip
import io
import json
import os
import random
import re
import statistics
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from drape_core import contract
from drape_runtime.codec import ImageInputError, Limits, decode_image
from drape_core.geometry import letterbox, unletterbox

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPO = ROOT / "build" / "model_repository" / "cpu"
DEFAULT_OUT = ROOT / "build" / "reliability" / "bad_inputs.json"
PROTOCOLS = ("grpc", "http")
INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
GATEWAY_REFUSED = {"StatusCode.INVALID_ARGUMENT", "413"}  # drape_serving.gateway's answers to an oversized body
GATEWAY_MESSAGE = re.compile(r"over the drape gateway limit of \d+ bytes")
MAX = contract.MAX_IMAGE_BYTES
WHICH = ("a", "b", "both")
MIB = 1 << 20
_EPOCH = time.gmtime(1_704_067_200)  # fixed PDF dates: the corpus is a function of the seed

# ------------------------------------------------------------------------------------------- what "clear" means

_CODEC = r"not a JPEG or PNG|truncated|corrupt|unsupported image format|cannot convert|no pixels|too large|over the"
REASONS: dict[str, str] = {
    # image bytes: the codec's own reasons (preprocess -> INVALID_ARGUMENT, "in ensemble 'x', <input>: <reason>")
    "fuzz_bytes": _CODEC,
    "mutated": _CODEC,
    "truncated": _CODEC,
    "header_garbage": _CODEC,
    "non_image": r"not a JPEG or PNG|unsupported image format",
    "zero_length": r"empty input \(0 bytes\)",
    "huge_dims": r"pixel limit per side|pixel budget|over the pixel limits|no pixels|header cannot be parsed",
    "bomb": r"pixel limit per side|pixel budget|over the pixel limits|Decompressed data too large",
    "oversize": r"encoded image is [\d.]+ MiB \(\d+ bytes\), over the [\d.]+ MiB limit",
    # tensors: Triton core's checks in front of the ensemble
    "dtype": r"data-type is '\w+', but model '\w+' expects 'UINT8'",
    "shape": r"unexpected shape|batch size does not match|batch-size must be <=|byte size mismatch|"
             r"has no shape but model requires batch dimension|expected one encoded image per request",
    "missing_input": r"missing required input",
    "extra_input": r"expected 2 inputs but got \d+ inputs|unexpected inference input",
    "wrong_name": r"unexpected inference input|missing required input",
}
_REASON_RE = {k: re.compile(v) for k, v in REASONS.items()}

# Server-log lines that mean a stub or the server itself went down. Triton 2.51 at --log-verbose=0 logs nothing
# when a stub is killed (checked with kill -9): the stub-PID comparison is what catches that; this scan catches
# the segfault/abort/traceback lines a dying stub or backend prints.
LOG_ALARMS = re.compile(
    r"segmentation fault|sigsegv|sigabrt|core dumped|stub process.*(not healthy|unhealthy)|"
    r"stub.*(exited|terminated|crash)|preprocess failed|traceback|signal \(\d+\) received|out of memory",
    re.IGNORECASE,
)


def names_word(message: str, name: str) -> bool:
    """``name`` appears in ``message`` as a whole identifier (``person_image`` does not match ``person_image2``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


# ---------------------------------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Tensor:
    """One input exactly as it goes on the wire: name, Triton datatype, shape and raw bytes (not validated)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class Case:
    """One malformed request. ``names``: the tensor names a clear message may cite (any one suffices)."""

    id: str
    category: str
    ensemble: str
    bad: str  # "a", "b", "both", or "request" when no single tensor is at fault
    variant: str
    tensors: tuple[Tensor, ...]
    names: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(t.data) for t in self.tensors)


def _u8(name: str, data: bytes) -> Tensor:
    return Tensor(name, "UINT8", (1, len(data)), data)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png(width: int, height: int, depth: int = 8, ctype: int = 0, idat: bytes | None = None,
         extra: bytes = b"", random_rows: int = 0, seed: int = 0) -> bytes:
    """A PNG written chunk by chunk, so headers can claim anything. Rows are zeros (a bomb) unless ``idat``
    is given; the first ``random_rows`` rows are noise (incompressible, to make the file itself large)."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0))
    if idat is None:
        row = 1 + width * _PNG_CHANNELS[ctype] * depth // 8  # filter byte + samples
        comp = zlib.compressobj(1 if random_rows else 9)
        rng = np.random.default_rng(seed)
        parts = [comp.compress(b"\0" + rng.bytes(row - 1)) for _ in range(random_rows)]
        zero_block = bytes(row * 256)
        left = height - random_rows
        while left > 0:
            n = min(256, left)
            parts.append(comp.compress(zero_block[: n * row]))
            left -= n
        parts.append(comp.flush())
        idat = b"".join(parts)
    return _PNG_SIG + ihdr + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


class Pool:
    """Real, valid images (seeded studio renders from the training data pipeline) that corrupt cases start from."""

    def __init__(self, seed: int):
        from drape_train.data.synth import render_pair

        a, b = render_pair(seed)
        person, still = Image.fromarray(a.image), Image.fromarray(b.cloth)
        big = person.resize((250, 333), Image.BILINEAR)
        rgba = Image.fromarray(np.dstack([a.image, np.full(a.image.shape[:2], 200, np.uint8)]), "RGBA")
        self.person_jpeg = _save(person, "JPEG", quality=92)
        self.still_jpeg = _save(still, "JPEG", quality=92)
        self.images: dict[str, bytes] = {
            "jpeg": self.person_jpeg,
            "jpeg_progressive": _save(big, "JPEG", quality=85, progressive=True),
            "jpeg_still": self.still_jpeg,
            "png": _save(person, "PNG"),
            "png_palette": _save(still.convert("P"), "PNG"),
            "png_gray": _save(person.convert("L"), "PNG"),
            "png_rgba": _save(rgba, "PNG"),
        }
        self.person = person

    def pick(self, rng: random.Random) -> tuple[str, bytes]:
        key = rng.choice(sorted(self.images))
        return key, self.images[key]


def _rejected(data: bytes) -> bool:
    """True when the serving codec refuses ``data`` (the same code and limits as the preprocess model)."""
    try:
        decode_image(data, "probe")
    except ImageInputError:
        return True
    return False


@dataclass
class Generator:
    """Builds the cases of one category for one ensemble; payload makers return (variant, bytes)."""

    pool: Pool
    seed: int
    discarded: Counter = field(default_factory=Counter)  # mutants the codec still decodes (valid images)

    # ---------------------------------------------------------------- image payloads (random -> filtered)

    def _filtered(self, category: str, rng: random.Random, make: Callable[[random.Random], tuple[str, bytes]]):
        """Random corruption can leave a valid image; keep drawing until the codec refuses it."""
        for _ in range(200):
            variant, data = make(rng)
            if _rejected(data):
                return variant, data
            self.discarded[category] += 1
        raise RuntimeError(f"{category}: 200 draws in a row were still valid images")

    def fuzz_bytes(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        def make(r: random.Random):
            n = r.choice([1, 2, 3, 4, 8, 16, 64, 512, 4096, 65536, r.randint(1, 300_000)])
            return f"random{n}", r.randbytes(n)
        return self._filtered("fuzz_bytes", rng, make)

    def mutated(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        def make(r: random.Random):
            key, base = self.pool.pick(r)
            data = bytearray(base)
            ops = []
            for _ in range(r.randint(1, 12)):
                op = r.choice(["flip", "byte", "insert", "delete", "dup", "zero", "marker"])
                pos = r.randrange(len(data)) if r.random() < 0.6 else r.randrange(min(len(data), 600))
                if op == "flip":
                    data[pos] ^= 1 << r.randrange(8)
                elif op == "byte":
                    data[pos] = r.randrange(256)
                elif op == "insert":
                    data[pos:pos] = r.randbytes(r.randint(1, 64))
                elif op == "delete":
                    del data[pos:pos + r.randint(1, 64)]
                elif op == "dup":
                    data[pos:pos] = data[pos:pos + r.randint(1, 256)]
                elif op == "zero":
                    n = r.randint(1, 256)
                    data[pos:pos + n] = bytes(len(data[pos:pos + n]))
                else:  # corrupt a JPEG marker or a PNG chunk length
                    marks = [m.start() for m in re.finditer(rb"\xff[\xc0-\xfe]|IDAT|IHDR|PLTE|tRNS", bytes(data))]
                    if marks:
                        m = r.choice(marks)
                        data[m + 1 if data[m] == 0xFF else max(0, m - 1)] = r.randrange(256)
                ops.append(op)
            return f"{key}:{'+'.join(ops)}", bytes(data)
        return self._filtered("mutated", rng, make)

    def truncated(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        def make(r: random.Random):
            key, base = self.pool.pick(r)
            n = len(base)
            cuts = [1, 2, 3, 4, 8, 16, 24, 33, 64, 100, 200, 400, n // 10, n // 4, n // 2, 3 * n // 4, n - 200,
                    n - 64, n - 13, n - 12, n - 4, n - 2, n - 1, r.randrange(1, n)]
            cut = max(1, min(n - 1, cuts[(i + r.randrange(len(cuts))) % len(cuts)]))
            return f"{key}[:{cut}/{n}]", base[:cut]
        return self._filtered("truncated", rng, make)

    def header_garbage(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        def make(r: random.Random):
            png, jpeg = self.pool.images["png"], self.pool.images["jpeg"]
            sos = jpeg.find(b"\xff\xda")
            idat = png.find(b"IDAT") - 4
            heads = {
                "jpeg_soi": jpeg[:3], "jpeg_app0": jpeg[:20], "jpeg_to_sos": jpeg[:sos],
                "jpeg_sos": jpeg[:sos + 14], "png_sig": png[:8], "png_ihdr": png[:33], "png_to_idat": png[:idat],
                "png_idat_head": png[:idat + 8],
            }
            key = r.choice(sorted(heads))
            garbage = r.randbytes(r.choice([0, 1, 16, 256, 4096, 50_000]))
            tail = _chunk(b"IEND", b"") if key.startswith("png") and r.random() < 0.5 else b""
            return f"{key}+{len(garbage)}", heads[key] + garbage + tail
        return self._filtered("header_garbage", rng, make)

    # ---------------------------------------------------------------- image payloads (refused by construction)

    def zero_length(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        return "empty", b""

    def non_image(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        img = self.pool.person
        jpeg = self.pool.person_jpeg
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as z:  # fixed timestamps: the corpus is a function of the seed
            z.writestr(zipfile.ZipInfo("person.jpg", date_time=(2024, 1, 1, 0, 0, 0)), jpeg)
        elf = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 64, 0, 0,
                                                                  64, 56, 1, 64, 0, 0) + bytes(200))
        makers: dict[str, Callable[[], bytes]] = {
            "gif": lambda: _save(img.convert("P"), "GIF"),
            "bmp": lambda: _save(img, "BMP"),
            "tiff": lambda: _save(img, "TIFF"),
            "webp": lambda: _save(img, "WEBP", quality=80),
            "pdf": lambda: _save(img, "PDF", creationDate=_EPOCH, modDate=_EPOCH),
            "ico": lambda: _save(img.resize((64, 64)), "ICO"),
            "ppm": lambda: _save(img, "PPM"),
            "zip_of_jpeg": lambda: zbuf.getvalue(),
            "gzip_of_jpeg": lambda: gzip.compress(jpeg, mtime=0),
            "base64_jpeg": lambda: base64.b64encode(jpeg),
            "data_url": lambda: b"data:image/jpeg;base64," + base64.b64encode(jpeg)[:2000],
            "text": lambda: b"person.jpg\n",
            "html": lambda: b"<!DOCTYPE html><html><body><img src='person.jpg'></body></html>",
            "svg": lambda: b"<svg xmlns='http://www.w3.org/2000/svg' width='192' height='256'><rect/></svg>",
            "json": lambda: json.dumps({"image": "person.jpg"}).encode(),
            "elf": lambda: elf,
            "utf16_bom": lambda: "\ufeffperson".encode("utf-16"),
        }
        key = sorted(makers)[i % len(makers)]
        return key, makers[key]()

    def huge_dims(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        tiny = zlib.compress(b"\0" * 64)
        jpeg = self.pool.images["jpeg"]
        prog = self.pool.images["jpeg_progressive"]

        def sof(data: bytes, marker: bytes, h: int, w: int) -> bytes:
            at = data.find(marker)
            patched = bytearray(data)
            patched[at + 5:at + 9] = struct.pack(">HH", h, w)
            return bytes(patched)

        variants: dict[str, Callable[[], bytes]] = {
            "png_100000x100000": lambda: _png(100_000, 100_000, idat=tiny),
            "png_2147483647x1": lambda: _png(2**31 - 1, 1, idat=tiny),
            "png_1x2147483647": lambda: _png(1, 2**31 - 1, idat=tiny),
            "png_4097x1": lambda: _png(4097, 1, idat=tiny),
            "png_1x4097": lambda: _png(1, 4097, idat=tiny),
            "png_65535x65535_rgba16": lambda: _png(65535, 65535, 16, 6, idat=tiny),
            "png_0x0": lambda: _png(0, 0, idat=tiny),
            "png_0x100": lambda: _png(0, 100, idat=tiny),
            "jpeg_65500x65500": lambda: sof(jpeg, b"\xff\xc0", 65500, 65500),
            "jpeg_4097x8": lambda: sof(jpeg, b"\xff\xc0", 4097, 8),
            "jpeg_8x65535": lambda: sof(jpeg, b"\xff\xc0", 8, 65535),
            "jpeg_0x0": lambda: sof(jpeg, b"\xff\xc0", 0, 0),
            "jpeg_progressive_65500x65500": lambda: sof(prog, b"\xff\xc2", 65500, 65500),
        }
        key = sorted(variants)[i % len(variants)]
        return key, variants[key]()

    def bomb(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        keys = sorted(_BOMBS)
        key = keys[i % len(keys)]
        return key, _bomb(key)

    def oversize(self, rng: random.Random, i: int) -> tuple[str, bytes]:
        keys = ["zeros_max+1", "random_max+1k", "jpeg_padded_max+1", "png_bomb_over_max", "jpeg_magic_20mib"]
        key = keys[i % len(keys)]
        if key == "zeros_max+1":
            return key, bytes(MAX + 1)
        if key == "random_max+1k":
            return key, rng.randbytes(MAX + 1024)
        if key == "jpeg_padded_max+1":  # a valid JPEG, padded after its EOI: only the size is wrong
            jpeg = self.pool.person_jpeg
            return key, jpeg + bytes(MAX + 1 - len(jpeg))
        if key == "png_bomb_over_max":
            return key, oversize_png_bomb()
        return key, b"\xff\xd8\xff" + rng.randbytes(20 * MIB)

    # ---------------------------------------------------------------- cases

    def image_case(self, category: str, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        which = WHICH[i % 3]
        make = getattr(self, category)
        good = {spec.input_names[0]: self.pool.person_jpeg, spec.input_names[1]: self.pool.still_jpeg}
        tensors, variants, names = [], [], []
        for role, name in zip("ab", spec.input_names):
            if which in (role, "both"):
                variant, data = make(rng, i + (role == "b" and which == "both"))  # both: two different variants
                variants.append(f"{role}={variant}")
                names.append(name)
            else:
                data = good[name]
            tensors.append(Tensor(name, "UINT8", (1, len(data)), data))
        return Case("", category, spec.name, which, ",".join(variants), tuple(tensors), tuple(names))

    def dtype(self, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        which = WHICH[i % 3]
        kinds = ["FP32", "INT8", "BYTES", "FP16", "INT32", "UINT16", "INT64", "BOOL", "FP64", "UINT32"]
        tensors, names, variants = [], [], []
        for role, name, good in zip("ab", spec.input_names, (self.pool.person_jpeg, self.pool.still_jpeg)):
            if which in (role, "both"):
                dt = kinds[(i + (role == "b" and which == "both")) % len(kinds)]
                tensors.append(_as_dtype(name, dt, good))
                names.append(name)
                variants.append(f"{role}={dt}")
            else:
                tensors.append(_u8(name, good))
        return Case("", "dtype", spec.name, which, ",".join(variants), tuple(tensors), tuple(names))

    def shape(self, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        a_name, b_name = spec.input_names
        a, b = self.pool.person_jpeg, self.pool.still_jpeg
        pair = (a_name, b_name)  # a batch-size mismatch is about the pair: Triton may name either input
        variants: list[tuple[str, str, list[Tensor], tuple[str, ...]]] = [
            ("rank1", "a", [Tensor(a_name, "UINT8", (len(a),), a), _u8(b_name, b)], pair),
            ("rank1", "b", [_u8(a_name, a), Tensor(b_name, "UINT8", (len(b),), b)], pair),
            ("rank1", "both", [Tensor(a_name, "UINT8", (len(a),), a), Tensor(b_name, "UINT8", (len(b),), b)],
             (a_name, b_name)),
            ("rank3_1x1xn", "a", [Tensor(a_name, "UINT8", (1, 1, len(a)), a), _u8(b_name, b)], (a_name,)),
            ("rank3_1xnx1", "b", [_u8(a_name, a), Tensor(b_name, "UINT8", (1, len(b), 1), b)], (b_name,)),
            ("rank0", "a", [Tensor(a_name, "UINT8", (), a[:1]), _u8(b_name, b)], (a_name,)),
            ("batch2", "a", [Tensor(a_name, "UINT8", (2, len(a)), a + a), _u8(b_name, b)], pair),
            ("batch2", "both", [Tensor(a_name, "UINT8", (2, len(a)), a + a),
                                Tensor(b_name, "UINT8", (2, len(b)), b + b)], (a_name, b_name)),
            ("batch9", "request", [Tensor(a_name, "UINT8", (9, len(a)), a * 9),
                                   Tensor(b_name, "UINT8", (9, len(b)), b * 9)], (spec.name,)),
            ("batch0", "both", [Tensor(a_name, "UINT8", (0, len(a)), b""), Tensor(b_name, "UINT8", (0, len(b)), b"")],
             (a_name, b_name)),
            ("declared_longer", "a", [Tensor(a_name, "UINT8", (1, len(a) + 10), a), _u8(b_name, b)], (a_name,)),
            ("declared_shorter", "b", [_u8(a_name, a), Tensor(b_name, "UINT8", (1, len(b) - 1), b)], (b_name,)),
            ("declared_huge", "a", [Tensor(a_name, "UINT8", (1, 2**40), a), _u8(b_name, b)], (a_name,)),
        ]
        variant, which, tensors, names = variants[i % len(variants)]
        return Case("", "shape", spec.name, which, variant, tuple(tensors), names)

    def missing_input(self, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        which = WHICH[i % 3]
        good = [_u8(spec.input_names[0], self.pool.person_jpeg), _u8(spec.input_names[1], self.pool.still_jpeg)]
        keep = [t for role, t in zip("ab", good) if which not in (role, "both")]
        names = tuple(n for role, n in zip("ab", spec.input_names) if which in (role, "both"))
        return Case("", "missing_input", spec.name, which, f"without {'+'.join(names)}", tuple(keep), names)

    def extra_input(self, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        other = [n for s in contract.ENSEMBLES.values() if s is not spec for n in s.input_names]
        extras = ["mask_image", spec.input_names[0] + "2", "image", spec.input_names[0].upper(), "", " ", *other]
        name = extras[i % len(extras)]
        good = [_u8(spec.input_names[0], self.pool.person_jpeg), _u8(spec.input_names[1], self.pool.still_jpeg)]
        dt = rng.choice(["UINT8", "FP32"])
        extra = _as_dtype(name, dt, self.pool.person_jpeg) if dt != "UINT8" else _u8(name, self.pool.person_jpeg)
        tensors = [good[0], extra, good[1]] if i % 2 else [*good, extra]
        names = (name,) if name.strip() else ()  # an empty/blank name cannot be cited: the count is the message
        return Case("", "extra_input", spec.name, "request" if not names else "extra", f"extra {name!r} {dt}",
                    tuple(tensors), names or (spec.name,))

    def wrong_name(self, spec: contract.EnsembleSpec, i: int, rng: random.Random) -> Case:
        which = WHICH[i % 3]
        other = [n for s in contract.ENSEMBLES.values() if s is not spec for n in s.input_names]

        def rename(name: str) -> str:
            options = [name.upper(), name.replace("_image", ""), name.replace("_", "-"), name + " ", "image",
                       name[:-1], *other]
            return options[i % len(options)]

        tensors, names, variants = [], [], []
        for role, name, data in zip("ab", spec.input_names, (self.pool.person_jpeg, self.pool.still_jpeg)):
            if which in (role, "both"):
                wrong = rename(name)
                while wrong in spec.input_names or wrong in [t.name for t in tensors]:
                    wrong += "_"
                tensors.append(_u8(wrong, data))
                names += [wrong, name]  # "unexpected input 'x'" or "missing required input 'y'"
                variants.append(f"{name}->{wrong!r}")
            else:
                tensors.append(_u8(name, data))
        return Case("", "wrong_name", spec.name, which, ",".join(variants), tuple(tensors), tuple(names))


def _as_dtype(name: str, datatype: str, data: bytes) -> Tensor:
    """The image bytes declared as another datatype (padded to whole elements); BYTES as one serialized element."""
    if datatype == "BYTES":
        return Tensor(name, datatype, (1, 1), struct.pack("<I", len(data)) + data)
    size = {"FP32": 4, "INT8": 1, "FP16": 2, "INT32": 4, "UINT16": 2, "INT64": 8, "BOOL": 1, "FP64": 8,
            "UINT32": 4}[datatype]
    padded = data + bytes(-len(data) % size)
    return Tensor(name, datatype, (1, len(padded) // size), padded)


_BOMBS: dict[str, Callable[[], bytes]] = {
    # Just over the 4096 px side limit, all zeros: a few KiB that would inflate to 17-130 MiB.
    "png_gray8_4097x4097": lambda: _png(4097, 4097, 8, 0),
    "png_gray16_4097x4097": lambda: _png(4097, 4097, 16, 0),
    "png_rgba16_4097x4097": lambda: _png(4097, 4097, 16, 6),
    "png_palette_4097x4097": lambda: _png(4097, 4097, 8, 3, extra=_chunk(b"PLTE", bytes(768))),
    "png_rgba8_8192x8192": lambda: _png(8192, 8192, 8, 6),
    # Valid 16x16 image carrying a 64 MiB compressed text / ICC chunk.
    "png_ztxt_64mib": lambda: _with_chunk(_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"A" * 64 * MIB, 9))),
    "png_iccp_64mib": lambda: _with_chunk(_chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(64 * MIB), 9))),
    "png_itxt_64mib": lambda: _with_chunk(_chunk(b"iTXt", b"k\0\x01\0\0\0" + zlib.compress(b"B" * 64 * MIB, 9))),
}


def _with_chunk(chunk: bytes) -> bytes:
    small = _png(16, 16, 8, 2)
    return small[:33] + chunk + small[33:]  # right after IHDR


@functools.lru_cache(maxsize=None)
def _bomb(key: str) -> bytes:
    return _BOMBS[key]()


@functools.lru_cache(maxsize=1)
def oversize_png_bomb() -> bytes:
    """A *valid* 4096x4096 16-bit RGBA PNG just over the byte limit (530 noise rows, the rest zeros): decoding it
    inflates 128 MiB of samples (~0.5 s here), so a fast size answer shows the byte check ran first."""
    return _png(4096, 4096, 16, 6, random_rows=530, seed=1)


TENSOR_CATEGORIES = ("dtype", "shape", "missing_input", "extra_input", "wrong_name")
IMAGE_CATEGORIES = ("fuzz_bytes", "mutated", "truncated", "header_garbage", "zero_length", "non_image", "huge_dims",
                    "bomb", "oversize")
CATEGORIES = IMAGE_CATEGORIES + TENSOR_CATEGORIES


@dataclass(frozen=True)
class CorpusConfig:
    """How big the corpus is: ``per_category`` cases per category and ensemble (each sent over every protocol)."""

    seed: int = 2024
    per_category: int = 20
    categories: tuple[str, ...] = CATEGORIES
    ensembles: tuple[str, ...] = tuple(contract.ENSEMBLES)

    def __post_init__(self) -> None:
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
        if set(self.ensembles) - set(contract.ENSEMBLES):
            raise ValueError(f"ensembles must be among {sorted(contract.ENSEMBLES)}, got {self.ensembles}")

    @property
    def n_cases(self) -> int:
        return self.per_category * len(self.categories) * len(self.ensembles)


def iter_cases(config: CorpusConfig, generator: Generator | None = None) -> Iterator[Case]:
    """Yield the corpus lazily (oversize cases are 16+ MiB each). Case ``k`` of a category depends only on
    (seed, category, ensemble, k), so a subset reproduces the same cases."""
    gen = generator or Generator(Pool(7), config.seed)
    for category in config.categories:
        for e_index, ensemble in enumerate(config.ensembles):
            spec = contract.ENSEMBLES[ensemble]
            for k in range(config.per_category):
                rng = random.Random(zlib.crc32(f"{config.seed}:{category}:{ensemble}:{k}".encode()))
                i = k + e_index * config.per_category  # recolor continues the variant cycle where tryon stopped
                if category in TENSOR_CATEGORIES:
                    case = getattr(gen, category)(spec, i, rng)
                else:
                    case = gen.image_case(category, spec, i, rng)
                yield Case(f"{category}/{ensemble}/{k}", case.category, case.ensemble, case.bad, case.variant,
                           case.tensors, case.names)


# ------------------------------------------------------------------------------------------- sending and judging


@dataclass(frozen=True)
class Target:
    """A running server: its endpoints and, for the process checks, its PID and log file."""

    http_url: str
    grpc_url: str
    server_pid: int | None = None
    log_file: Path | None = None


class Clients:
    """One raw tritonclient per protocol; :meth:`send` puts tensors on the wire without validating them."""

    def __init__(self, target: Target, timeout_s: float = 120.0):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.modules = {"grpc": grpcclient, "http": httpclient}
        self.timeout_s = timeout_s
        self.grpc = grpcclient.InferenceServerClient(target.grpc_url)
        self.http = httpclient.InferenceServerClient(target.http_url, connection_timeout=timeout_s,
                                                     network_timeout=timeout_s)

    def client(self, protocol: str):
        return self.grpc if protocol == "grpc" else self.http

    def _inputs(self, protocol: str, tensors: Sequence[Tensor]) -> list:
        tc = self.modules[protocol]
        inputs = []
        for t in tensors:
            inp = tc.InferInput(t.name, list(t.shape), t.datatype)
            if protocol == "grpc":
                inp._raw_content = t.data  # tritonclient would refuse a shape/dtype/bytes mismatch; we want it sent
            else:
                inp._raw_data = t.data
                inp._parameters["binary_data_size"] = len(t.data)
            inputs.append(inp)
        return inputs

    def send(self, protocol: str, model: str, tensors: Sequence[Tensor]) -> tuple[str, str, float, object]:
        """(status, message, latency_s, result): status ``OK``, a gRPC StatusCode / HTTP code, or ``EXC <type>``."""
        from tritonclient.utils import InferenceServerException

        inputs = self._inputs(protocol, tensors)
        kw = {"client_timeout": self.timeout_s} if protocol == "grpc" else {}
        start = time.perf_counter()
        try:
            result = self.client(protocol).infer(model, inputs, **kw)
            return "OK", "", time.perf_counter() - start, result
        except InferenceServerException as exc:
            return str(exc.status()), str(exc.message()), time.perf_counter() - start, None
        except Exception as exc:  # noqa: BLE001 - transport failures are findings, not crashes of the runner
            return f"EXC {type(exc).__name__}", str(exc), time.perf_counter() - start, None

    def close(self) -> None:
        for c in (self.grpc, self.http):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class Record:
    """One malformed request and how it was answered."""

    case: str
    category: str
    ensemble: str
    protocol: str
    bad: str
    variant: str
    nbytes: int
    status: str
    message: str
    latency_ms: float
    invalid_argument: bool
    names_input: bool
    says_why: bool

    @property
    def clear(self) -> bool:
        return self.names_input and self.says_why

    @property
    def ok(self) -> bool:
        return self.invalid_argument and self.clear


def judge(case: Case, protocol: str, status: str, message: str, latency_s: float) -> Record:
    """The acceptance rule for one answer (see the module docstring)."""
    return Record(
        case=case.id, category=case.category, ensemble=case.ensemble, protocol=protocol, bad=case.bad,
        variant=case.variant[:160], nbytes=case.nbytes, status=status, message=message[:400],
        latency_ms=round(latency_s * 1000, 2), invalid_argument=status in INVALID,
        names_input=any(names_word(message, n) for n in case.names),
        says_why=_REASON_RE[case.category].search(message) is not None,
    )


# ------------------------------------------------------------------------------------------------ server health


def _stub_prefix(cmdline: Sequence[str]) -> str | None:
    for arg in cmdline:
        m = re.search(r"shm-region-prefix-name=(\S+)", arg)
        if m:
            return m.group(1)
    return None


class ServerWatch:
    """The tritonserver process, its python-backend stubs (children), their memory and the server log."""

    def __init__(self, pid: int | None, log_file: Path | None):
        import psutil

        self.psutil = psutil
        self.proc = psutil.Process(pid) if pid else None
        self.log_file = Path(log_file) if log_file else None
        self.log_offset = self.log_file.stat().st_size if self.log_file and self.log_file.exists() else 0
        self.shm_prefix = _stub_prefix(self.proc.cmdline()) if self.proc else None
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_running() and self.proc.status() != self.psutil.STATUS_ZOMBIE

    def stubs(self) -> dict[int, str]:
        """{pid: model path} of every python-backend stub the server runs."""
        if not self.proc:
            return {}
        out = {}
        for child in self.proc.children(recursive=True):
            try:
                cmd = child.cmdline()
                if cmd and cmd[0].endswith("triton_python_backend_stub"):
                    out[child.pid] = cmd[1] if len(cmd) > 1 else cmd[0]
            except self.psutil.NoSuchProcess:
                continue
        return out

    def memory(self) -> dict[str, int]:
        """RSS of the server and of all its stubs, and the bytes its /dev/shm regions really use (tmpfs pages)."""
        if not self.proc:
            return {}
        server = stubs = 0
        try:
            server = self.proc.memory_info().rss
            for child in self.proc.children(recursive=True):
                try:
                    stubs += child.memory_info().rss
                except self.psutil.NoSuchProcess:
                    pass
        except self.psutil.NoSuchProcess:
            pass
        shm = sum(self.shm_regions().values())
        return {"server_rss": server, "stubs_rss": stubs, "shm_used": shm, "total": server + stubs + shm}

    def region_models(self) -> dict[str, str]:
        """{shm region file: model directory} from the stubs' command lines (stub, model.py, region, ...)."""
        out = {}
        for pid, _ in self.stubs().items():
            try:
                cmd = self.psutil.Process(pid).cmdline()
                out[cmd[2]] = Path(cmd[1]).parent.parent.name
            except (self.psutil.NoSuchProcess, IndexError):
                continue
        return out

    def shm_regions(self) -> dict[str, int]:
        """{region file: bytes of tmpfs pages it holds} for this server's python-backend shared memory."""
        out: dict[str, int] = {}
        if self.shm_prefix and Path("/dev/shm").is_dir():
            for entry in os.scandir("/dev/shm"):
                if entry.name.startswith(self.shm_prefix):
                    try:
                        out[entry.name] = entry.stat().st_blocks * 512
                    except OSError:
                        pass
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            mem = self.memory()
            peak = self.peaks.setdefault(self.phase, dict(mem))
            for k, v in mem.items():
                peak[k] = max(peak.get(k, 0), v)

    def start_sampling(self) -> None:
        if self.proc and self._thread is None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)

    def log_alarms(self) -> list[str]:
        """Alarming lines the server logged since this watch began."""
        if not self.log_file or not self.log_file.exists():
            return []
        with open(self.log_file, "rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if LOG_ALARMS.search(line)]


def pid_listening_on(port: int) -> int | None:
    """The PID of the local process listening on ``port`` (for ``--grpc-url`` targets), if visible to us."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


# ------------------------------------------------------------------------------------------------- good requests


@dataclass
class GoodCheck:
    """A known-good request per ensemble and protocol after ``after_cases`` malformed cases."""

    after_cases: int
    ok: bool
    live: bool
    ready: bool
    server_alive: bool
    stubs_same: bool
    max_abs_diff: int
    exact: bool
    latency_ms: float
    problems: list[str] = field(default_factory=list)


class GoodRequests:
    """The reference answers of a good pair per ensemble, taken at the start; later answers must match them."""

    def __init__(self, clients: Clients, pool: Pool, ensembles: Sequence[str]):
        self.clients = clients
        self.pairs = {e: (pool.person_jpeg, pool.still_jpeg) for e in ensembles}
        self.reference: dict[str, dict[str, np.ndarray]] = {}

    def _ask(self, ensemble: str, protocol: str) -> tuple[dict[str, np.ndarray] | None, str, float]:
        spec = contract.ENSEMBLES[ensemble]
        tensors = [_u8(n, d) for n, d in zip(spec.input_names, self.pairs[ensemble])]
        status, message, latency, result = self.clients.send(protocol, ensemble, tensors)
        if status != "OK":
            return None, f"{ensemble}/{protocol}: good request failed: {status} {message[:200]}", latency
        return {o: result.as_numpy(o) for o in spec.output_names}, "", latency

    def take_reference(self) -> None:
        for ensemble in self.pairs:
            out, problem, _ = self._ask(ensemble, "grpc")
            if out is None:
                raise RuntimeError(f"cannot take the reference answer: {problem}")
            self.reference[ensemble] = out

    def check(self, after_cases: int, watch: ServerWatch, stubs0: dict[int, str]) -> GoodCheck:
        problems, worst, latencies = [], 0, []
        for ensemble, ref in self.reference.items():
            for protocol in PROTOCOLS:
                out, problem, latency = self._ask(ensemble, protocol)
                latencies.append(latency)
                if out is None:
                    problems.append(problem)
                    continue
                for name, expected in ref.items():
                    got = out[name]
                    if got.shape != expected.shape or got.dtype != expected.dtype:
                        problems.append(f"{ensemble}/{protocol}: {name} {got.dtype}{got.shape} != {expected.shape}")
                        continue
                    diff = int(np.abs(got.astype(np.int16) - expected.astype(np.int16)).max()) if got.size else 0
                    worst = max(worst, diff)
                    if diff > 1:
                        problems.append(f"{ensemble}/{protocol}: {name} differs from the reference by {diff} levels")
        grpc, http = self.clients.grpc, self.clients.http
        live = _safe(grpc.is_server_live) and _safe(http.is_server_live)
        ready = _safe(grpc.is_server_ready) and _safe(http.is_server_ready)
        alive = watch.alive() if watch.proc else True
        stubs_same = watch.stubs() == stubs0 if watch.proc else True
        if not (live and ready):
            problems.append(f"server live={live} ready={ready}")
        if not alive:
            problems.append("tritonserver process is gone")
        if not stubs_same:
            problems.append(f"stub PIDs changed: {sorted(stubs0)} -> {sorted(watch.stubs())}")
        return GoodCheck(after_cases, not problems, live, ready, alive, stubs_same, worst, worst == 0,
                         round(max(latencies) * 1000, 1), problems)


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # noqa: BLE001 - a health call that raises is a "no"
        return False


# --------------------------------------------------------------------------------------------- size-limit probe


def size_limit_probe(clients: Clients, watch: ServerWatch, pool: Pool, transport_mib: Sequence[int] = (64,),
                     gateway: Clients | None = None, direct_transport: bool = True) -> dict:
    """Show the byte limit is applied before decoding, over both protocols, and what the transport lets through.

    The payload is a valid PNG over ``MAX_IMAGE_BYTES`` that decodes to 4096x4096: in-process its full decode takes
    ``decode_s``; the server must answer with the size message in a small fraction of that (the size check is the
    first thing ``decode_image`` does, before Pillow sees a byte). Then payloads of ``transport_mib`` MiB show that
    Triton itself accepts them (no body limit in front of the codec) and how the python backend's shared-memory
    regions grow to carry them: they keep that size, so large sizes leave the server bigger (own servers only).
    With ``gateway`` (clients of the request-size gateway in front of the same server) the transport payloads go
    through it first: it must refuse them with its limit message, and the server's shm regions must not change.
    """
    bomb = oversize_png_bomb()
    t0 = time.perf_counter()
    decoded = decode_image(bomb, "probe", Limits(max_bytes=1 << 31))
    decode_s = time.perf_counter() - t0
    size_message = "decoded: the size check did not fire"
    t0 = time.perf_counter()
    try:
        decode_image(bomb, "probe")
    except ImageInputError as exc:
        size_message = str(exc)
    check_s = time.perf_counter() - t0
    out: dict = {"payload_bytes": len(bomb), "decodes_to": list(decoded.shape),
                 "in_process_full_decode_ms": round(decode_s * 1000, 1),
                 "in_process_size_check_ms": round(check_s * 1000, 3), "in_process_message": size_message,
                 "server": [], "transport": []}
    del decoded
    spec = contract.TRYON
    for protocol in PROTOCOLS:
        mem0 = watch.memory()
        # Warm the connection path with one more size refusal so the timing is not a first-request artefact.
        clients.send(protocol, spec.name, [_u8(spec.input_names[0], bomb), _u8(spec.input_names[1], pool.still_jpeg)])
        status, message, latency, _ = clients.send(
            protocol, spec.name, [_u8(spec.input_names[0], bomb), _u8(spec.input_names[1], pool.still_jpeg)])
        out["server"].append({
            "protocol": protocol, "status": status, "message": message[:300], "latency_ms": round(latency * 1000, 1),
            "size_message": bool(_REASON_RE["oversize"].search(message)), "invalid_argument": status in INVALID,
            "vs_full_decode": round(latency / decode_s, 3), "memory_before": mem0, "memory_after": watch.memory(),
        })
    routes = ([("gateway", gateway)] if gateway is not None else []) + ([("direct", clients)] if direct_transport else [])
    for mib in transport_mib:
        big = b"\xff\xd8\xff" + bytes(mib * MIB - 3)
        for route, route_clients in routes:
            for protocol in PROTOCOLS:
                mem0, regions0 = watch.memory(), watch.shm_regions()
                status, message, latency, _ = route_clients.send(
                    protocol, spec.name, [_u8(spec.input_names[0], big), _u8(spec.input_names[1], pool.still_jpeg)])
                regions1 = watch.shm_regions()
                owners = watch.region_models()
                grown = {f"{owners.get(k, '?')}:{k[-8:]}": v // MIB for k, v in regions1.items()
                         if v != regions0.get(k)}
                row = {
                    "route": route, "protocol": protocol, "payload_mib": mib, "status": status,
                    "message": message[:300], "size_message": bool(_REASON_RE["oversize"].search(message)),
                    "invalid_argument": status in INVALID, "latency_ms": round(latency * 1000, 1),
                    "memory_before": mem0, "memory_after": watch.memory(), "shm_regions_grown_mib": grown,
                }
                if route == "gateway":
                    row["refused_by_gateway"] = status in GATEWAY_REFUSED and bool(GATEWAY_MESSAGE.search(message))
                out["transport"].append(row)
        del big
    return out


# ------------------------------------------------------------------------------------------------------- runner


@dataclass
class Report:
    records: list[Record]
    checks: list[GoodCheck]
    stubs_at_start: dict[int, str]
    stubs_at_end: dict[int, str]
    server_alive: bool
    log_alarms: list[str]
    memory_start: dict[str, int]
    memory_end: dict[str, int]
    memory_peaks: dict[str, dict[str, int]]
    discarded_valid_mutants: dict[str, int]
    size_probe: dict | None = None
    config: dict = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def violations(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    @property
    def passed(self) -> bool:
        probe_ok = self.size_probe is None or all(
            (s["refused_by_gateway"] and not s["shm_regions_grown_mib"]) if s.get("route") == "gateway"
            else (s["invalid_argument"] and s["size_message"])
            for s in self.size_probe["server"] + self.size_probe["transport"])
        return (not self.violations and all(c.ok for c in self.checks) and self.server_alive
                and self.stubs_at_start == self.stubs_at_end and not self.log_alarms and probe_ok)

    def groups(self) -> list[dict]:
        """Per (category, ensemble, protocol): count, INVALID_ARGUMENT %, clear %, latency p50/max."""
        by: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
        for r in self.records:
            by[(r.category, r.ensemble, r.protocol)].append(r)
        rows = []
        for (cat, ens, proto), recs in sorted(by.items(), key=lambda kv: (CATEGORIES.index(kv[0][0]), kv[0][1:])):
            lat = [r.latency_ms for r in recs]
            rows.append({
                "category": cat, "ensemble": ens, "protocol": proto, "count": len(recs),
                "invalid_argument_pct": round(100 * sum(r.invalid_argument for r in recs) / len(recs), 1),
                "clear_pct": round(100 * sum(r.clear for r in recs) / len(recs), 1),
                "p50_ms": round(statistics.median(lat), 1), "max_ms": round(max(lat), 1),
            })
        return rows

    def to_json(self) -> dict:
        n = len(self.records)
        return {
            "passed": self.passed,
            "config": self.config,
            "duration_s": round(self.duration_s, 1),
            "totals": {
                "requests": n,
                "invalid_argument": sum(r.invalid_argument for r in self.records),
                "clear": sum(r.clear for r in self.records),
                "violations": len(self.violations),
                "good_checks": len(self.checks),
                "good_checks_ok": sum(c.ok for c in self.checks),
            },
            "server": {
                "alive": self.server_alive, "stubs_same": self.stubs_at_start == self.stubs_at_end,
                "stubs": len(self.stubs_at_start), "log_alarms": self.log_alarms[:50],
                "memory_start": self.memory_start, "memory_end": self.memory_end, "memory_peaks": self.memory_peaks,
            },
            "discarded_valid_mutants": self.discarded_valid_mutants,
            "groups": self.groups(),
            "size_probe": self.size_probe,
            "checks": [asdict(c) for c in self.checks],
            "violations": [asdict(r) for r in self.violations[:100]],
            "examples": _examples(self.records),
            "records": [asdict(r) for r in self.records],
        }


def _examples(records: Sequence[Record]) -> dict[str, str]:
    """One message per (category, status) for the report: what a client actually reads."""
    out: dict[str, str] = {}
    for r in records:
        out.setdefault(f"{r.category} {r.protocol} {r.status}", r.message[:300])
    return out


def run_corpus(target: Target, config: CorpusConfig, *, protocols: Sequence[str] = PROTOCOLS, check_every: int = 50,
               size_probe: bool = False, transport_mib: Sequence[int] = (64,), progress: bool = True,
               pool: Pool | None = None, gateway: Target | None = None, direct_transport: bool = True) -> Report:
    """Send every case of ``config`` over ``protocols`` to ``target`` and judge the answers and the server.

    ``gateway``: the request-size gateway in front of ``target``; the size probe's transport payloads go through
    it (and, with ``direct_transport``, then straight to ``target`` as well)."""
    started = time.perf_counter()
    pool = pool or Pool(7)
    gen = Generator(pool, config.seed)
    clients = Clients(target)
    watch = ServerWatch(target.server_pid, target.log_file)
    try:
        good = GoodRequests(clients, pool, config.ensembles)
        good.take_reference()
        stubs0 = watch.stubs()
        mem0 = watch.memory()
        watch.start_sampling()
        checks = [good.check(0, watch, stubs0)]
        records: list[Record] = []
        with _progress(progress) as bar:
            task = bar.add_task("bad inputs", total=config.n_cases * len(protocols))
            for n, case in enumerate(iter_cases(config, gen), start=1):
                watch.phase = case.category
                bar.update(task, description=f"{case.category:<14} {case.ensemble:<7}")
                for protocol in protocols:
                    status, message, latency, _ = clients.send(protocol, case.ensemble, case.tensors)
                    records.append(judge(case, protocol, status, message, latency))
                    bar.advance(task)
                if n % check_every == 0:
                    watch.phase = "good"
                    checks.append(good.check(n, watch, stubs0))
        watch.phase = "good"
        if not checks or checks[-1].after_cases != config.n_cases:
            checks.append(good.check(config.n_cases, watch, stubs0))
        probe = None
        if size_probe:
            watch.phase = "size_probe"
            gateway_clients = Clients(gateway) if gateway is not None else None
            try:
                probe = size_limit_probe(clients, watch, pool, transport_mib, gateway_clients, direct_transport)
            finally:
                if gateway_clients is not None:
                    gateway_clients.close()
            checks.append(good.check(config.n_cases, watch, stubs0))
        watch.phase = "end"
        time.sleep(0.2)
        return Report(
            records=records, checks=checks, stubs_at_start=stubs0, stubs_at_end=watch.stubs(),
            server_alive=watch.alive() if watch.proc else True, log_alarms=watch.log_alarms(), memory_start=mem0,
            memory_end=watch.memory(), memory_peaks={k: dict(v) for k, v in watch.peaks.items()},
            discarded_valid_mutants=dict(gen.discarded), size_probe=probe,
            config={**asdict(config), "protocols": list(protocols), "check_every": check_every,
                    "target": {"http": target.http_url, "grpc": target.grpc_url, "pid": target.server_pid},
                    "gateway": {"http": gateway.http_url, "grpc": gateway.grpc_url} if gateway else None},
            duration_s=time.perf_counter() - started,
        )
    finally:
        watch.stop_sampling()
        clients.close()


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def print_summary(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="malformed requests: category x ensemble x protocol")
    for col in ("category", "ensemble", "protocol", "count", "INVALID_ARG %", "clear %", "p50 ms", "max ms"):
        table.add_column(col, justify="right" if col not in ("category", "ensemble", "protocol") else "left")
    for g in report.groups():
        style = None if g["invalid_argument_pct"] == 100 and g["clear_pct"] == 100 else "bold red"
        table.add_row(g["category"], g["ensemble"], g["protocol"], str(g["count"]), f"{g['invalid_argument_pct']:.1f}",
                      f"{g['clear_pct']:.1f}", f"{g['p50_ms']:.1f}", f"{g['max_ms']:.1f}", style=style)
    console.print(table)
    j = report.to_json()
    t = j["totals"]
    console.print(f"requests {t['requests']}  INVALID_ARGUMENT {t['invalid_argument']}  clear {t['clear']}  "
                  f"violations {t['violations']}  good checks {t['good_checks_ok']}/{t['good_checks']}  "
                  f"in {j['duration_s']:.0f}s")
    s = j["server"]
    discarded = sum(j["discarded_valid_mutants"].values())
    console.print(f"server alive {s['alive']}  stubs unchanged {s['stubs_same']} ({s['stubs']} stubs)  "
                  f"log alarms {len(s['log_alarms'])}  valid mutants discarded {discarded}")
    if report.memory_start:
        mib = lambda b: f"{b / MIB:.0f}"  # noqa: E731
        console.print(f"memory MiB (server RSS / stubs RSS / shm): start {mib(report.memory_start['server_rss'])}/"
                      f"{mib(report.memory_start['stubs_rss'])}/{mib(report.memory_start['shm_used'])}  end "
                      f"{mib(report.memory_end['server_rss'])}/{mib(report.memory_end['stubs_rss'])}/"
                      f"{mib(report.memory_end['shm_used'])}")
        for phase, peak in report.memory_peaks.items():
            console.print(f"  peak during {phase:<14} total {mib(peak['total'])} (server {mib(peak['server_rss'])}, "
                          f"stubs {mib(peak['stubs_rss'])}, shm {mib(peak['shm_used'])})")
    if report.size_probe:
        p = report.size_probe
        console.print(f"size probe: {p['payload_bytes']} B valid PNG -> {p['decodes_to']}: in-process full decode "
                      f"{p['in_process_full_decode_ms']} ms, size check {p['in_process_size_check_ms']} ms")
        for s in p["server"]:
            console.print(f"  {s['protocol']}: {s['status']} in {s['latency_ms']} ms "
                          f"({s['vs_full_decode']:.2f}x the decode time) size message {s['size_message']}")
        for s in p["transport"]:
            before, after = s["memory_before"], s["memory_after"]
            route = s.get("route", "direct")
            verdict = (f" refused by the gateway: {s['refused_by_gateway']}" if route == "gateway" else "")
            console.print(f"  transport {route} {s['protocol']} {s['payload_mib']} MiB: {s['status']} in "
                          f"{s['latency_ms']} ms{verdict}; "
                          f"server RSS {before.get('server_rss', 0) / MIB:.0f} -> "
                          f"{after.get('server_rss', 0) / MIB:.0f}"
                          f" MiB, shm {before.get('shm_used', 0) / MIB:.0f} -> {after.get('shm_used', 0) / MIB:.0f} MiB"
                          f" (regions grown to MiB: {s['shm_regions_grown_mib'] or 'none'})")
    for v in report.violations[:20]:
        console.print(f"[red]VIOLATION[/red] {v.case} {v.protocol} {v.variant}: {v.status} {v.message[:200]}")
    for c in report.checks:
        for p in c.problems:
            console.print(f"[red]CHECK after {c.after_cases}[/red] {p}")
    for line in report.log_alarms[:10]:
        console.print(f"[red]LOG[/red] {line}")
    console.print("[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]")


# --------------------------------------------------------------------------------------------- atheris harness


FUZZ_LIMITS = Limits(max_bytes=1 << 20, max_side=512, max_pixels=512 * 384)


def fuzz_one(data: bytes) -> None:
    """The property every input must keep: decode to RGB uint8 within the limits, or an input error naming the
    input; a decoded image letterboxes to exactly the network size and back to its own size."""
    try:
        img = decode_image(data, "person_image", FUZZ_LIMITS)
    except ImageInputError as exc:
        if not str(exc).startswith("person_image: "):
            raise AssertionError(f"error does not name the input: {exc}") from None
        return
    h, w = img.shape[:2]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, img.shape
    assert 1 <= h <= FUZZ_LIMITS.max_side and 1 <= w <= FUZZ_LIMITS.max_side and h * w <= FUZZ_LIMITS.max_pixels
    boxed, params = letterbox(img, contract.DEFAULT_RESOLUTION)
    assert boxed.shape == (*contract.DEFAULT_RESOLUTION, 3), boxed.shape
    assert unletterbox(boxed, params).shape == img.shape


def fuzz_seeds(seed: int = 7) -> dict[str, bytes]:
    """Small valid images in every mode the codec converts (no render: fewer modules for atheris to instrument)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:30]
    rgb = np.dstack([xx * 8, yy * 6, (xx + yy) * 3]).astype(np.uint8) ^ rng.integers(0, 16, (40, 30, 3), np.uint8)
    img = Image.fromarray(rgb)
    rgba = Image.fromarray(np.dstack([rgb, (xx * 8).astype(np.uint8)]), "RGBA")
    gray16 = Image.fromarray((yy * 1600).astype(np.uint16))
    return {
        "jpeg": _save(img, "JPEG", quality=90), "jpeg_progressive": _save(img, "JPEG", progressive=True),
        "jpeg_gray": _save(img.convert("L"), "JPEG"), "jpeg_cmyk": _save(img.convert("CMYK"), "JPEG"),
        "png": _save(img, "PNG"), "png_rgba": _save(rgba, "PNG"), "png_palette": _save(img.convert("P"), "PNG"),
        "png_gray16": _save(gray16, "PNG"), "png_1bit": _save(img.convert("1"), "PNG"),
        "png_gray_alpha": _save(img.convert("LA"), "PNG"),
    }


def _instrument(atheris, prefixes: tuple[str, ...]) -> int:
    """Instrument only Pillow's and drape_serving's Python functions (``instrument_all`` takes minutes on numpy)."""
    import gc
    import types

    funcs = [o for o in gc.get_objects()
             if isinstance(o, types.FunctionType) and (o.__module__ or "").startswith(prefixes)]
    for func in funcs:
        try:
            atheris.instrument_func(func)
        except Exception:  # noqa: BLE001 - a few builtins-backed callables cannot be instrumented
            pass
    return len(funcs)


def run_fuzz(runs: int, max_len: int, seed: int, corpus_dir: Path | None) -> int:
    """Coverage-guided fuzzing with atheris (libFuzzer): Pillow's PNG/JPEG header parsers and the codec are Python,
    so their coverage steers the mutations; seeds are real JPEG/PNG renders."""
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris (wheels for CPython 3.8-3.11 on x86-64 Linux)",
              file=sys.stderr)
        return 2
    corpus = Path(corpus_dir) if corpus_dir else Path(tempfile.mkdtemp(prefix="drape-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for k, v in fuzz_seeds(seed).items():
            (corpus / k).write_bytes(v)
    print(f"fuzzing decode_image + letterbox: {runs} runs, max_len {max_len}, corpus {corpus}", file=sys.stderr)
    _instrument(atheris, ("PIL", "drape_serving"))

    def one(data: bytes) -> None:
        fuzz_one(data)

    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_len={max_len}", f"-seed={seed}", "-timeout=20",
                   "-print_final_stats=1", str(corpus)], one)
    atheris.Fuzz()  # exits the process: 0 when no input broke the property
    return 0


# ---------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.reliability.bad_inputs",
        description="Malformed-request corpus against both ensembles over HTTP and gRPC (run), "
                    "or coverage-guided fuzzing of decode/letterbox in-process (fuzz).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples" + __doc__.split("Examples", 1)[1],
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="send the corpus to a server and judge every answer (default: start one)",
                       description="Send the seeded corpus to both ensembles over both protocols; exit 1 on any "
                                   "violation (a status other than INVALID_ARGUMENT/400, an unclear message, a failed "
                                   "good request, a changed stub PID, a dead server or an alarming log line).")
    r.add_argument("--per-category", type=int, default=20,
                   help="cases per category and ensemble; requests = this x %d categories x ensembles x protocols "
                        "(default %%(default)s -> 1120)" % len(CATEGORIES))
    r.add_argument("--seed", type=int, default=2024, help="corpus seed (default %(default)s)")
    r.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated subset (default: all)")
    r.add_argument("--ensembles", default=",".join(contract.ENSEMBLES), help="comma-separated (default: both)")
    r.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated (default: both)")
    r.add_argument("--check-every", type=int, default=50, help="good request + health after this many cases")
    r.add_argument("--no-size-probe", action="store_true", help="skip the oversize/transport probe at the end")
    r.add_argument("--transport-mib", default="64",
                   help="comma-separated payload sizes (MiB) the probe sends to show what Triton accepts; sizes over "
                        "the shm region (96 MiB) grow it for good: use large ones on your own server only "
                        "(default %(default)s; RELIABILITY.md used 64,300)")
    r.add_argument("--transport-via", choices=("direct", "gateway", "both"), default="direct",
                   help="send the transport payloads straight to the server (default), through the request-size "
                        "gateway (nginx, drape_serving.gateway, started here in front of the server; it must refuse "
                        "them with the server's shm unchanged), or through the gateway and then direct")
    r.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="model repository to serve (default %(default)s)")
    r.add_argument("--http-url", help="target a running server instead (host:port); needs --grpc-url too")
    r.add_argument("--grpc-url", help="gRPC host:port of the running server")
    r.add_argument("--server-pid", type=int, help="PID of the running tritonserver (default: whoever listens on "
                                                  "the gRPC port) for the process and stub checks")
    r.add_argument("--server-log", type=Path, help="log file of the running server, scanned for stub/segfault errors")
    r.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default %(default)s)")
    f = sub.add_parser("fuzz", help="atheris coverage-guided fuzzing of decode_image + letterbox (in-process)")
    f.add_argument("--runs", type=int, default=20000, help="libFuzzer -runs (default %(default)s)")
    f.add_argument("--max-len", type=int, default=20000, help="longest input in bytes (default %(default)s)")
    f.add_argument("--seed", type=int, default=7)
    f.add_argument("--corpus", type=Path, help="corpus directory (kept between runs; default: a fresh temp dir)")
    return p


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fuzz":
        return run_fuzz(args.runs, args.max_len, args.seed, args.corpus)
    try:
        config = CorpusConfig(seed=args.seed, per_category=args.per_category, categories=_split(args.categories),
                              ensembles=_split(args.ensembles))
    except ValueError as exc:
        raise SystemExit(f"bad_inputs: {exc}") from None
    protocols = _split(args.protocols)
    if set(protocols) - set(PROTOCOLS):
        raise SystemExit(f"bad_inputs: --protocols must be among {PROTOCOLS}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.transport_via != "direct" and args.no_size_probe:
        raise SystemExit("bad_inputs: --transport-via needs the size probe (drop --no-size-probe)")
    run = functools.partial(run_corpus, config=config, protocols=protocols, check_every=args.check_every,
                            size_probe=not args.no_size_probe,
                            transport_mib=tuple(int(v) for v in _split(args.transport_mib)),
                            direct_transport=args.transport_via != "gateway")
    with contextlib.ExitStack() as stack:
        if args.http_url or args.grpc_url:
            if not (args.http_url and args.grpc_url):
                raise SystemExit("bad_inputs: give both --http-url and --grpc-url")
            pid = args.server_pid or pid_listening_on(int(args.grpc_url.rsplit(":", 1)[1]))
            if pid is None:
                print("bad_inputs: server PID not found: process and stub checks are skipped", file=sys.stderr)
            target = Target(args.http_url, args.grpc_url, pid, args.server_log)
        else:
            from drape_serving.server import start_server

            log = args.out.with_suffix(".tritonserver.log")
            print(f"bad_inputs: starting tritonserver on {args.repo} (log {log})", file=sys.stderr)
            server = stack.enter_context(start_server(args.repo, log_file=log, ready_timeout=240))
            target = Target(server.http_url, server.grpc_url, server.process.pid, log)
        gateway = None
        if args.transport_via != "direct":
            from drape_serving.gateway import GatewayError, start_gateway

            host, http_port = target.http_url.rsplit(":", 1)
            try:
                g = stack.enter_context(start_gateway(int(http_port), int(target.grpc_url.rsplit(":", 1)[1]),
                                                      triton_host=host))
            except GatewayError as exc:
                raise SystemExit(f"bad_inputs: {exc}") from None
            print(f"bad_inputs: request-size gateway (nginx) on HTTP {g.http_url}, gRPC {g.grpc_url}", file=sys.stderr)
            gateway = Target(g.http_url, g.grpc_url)
        report = run(target, gateway=gateway)
    args.out.write_text(json.dumps(report.to_json(), indent=1))
    print_summary(report)
    print(f"report: {args.out}", file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
