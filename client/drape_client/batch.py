"""Folder batch mode: many image pairs through one ensemble with bounded concurrency, resumable, atomic writes.

Pairs come from a pairs file (``a b [output name]`` per line, VITON-HD style) or from two folders matched by file
stem (``on_model/123.jpg`` with ``still/123.png``). A pair whose outputs already exist is skipped, so an
interrupted run continues where it stopped; outputs are written to a temporary name and renamed, so a crash
never leaves a half-written image that a later run would skip. Every failure is collected and summarised at the
end instead of stopping the batch.
"""
from __future__ import annotations

import asyncio
import io
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from drape_core import contract

from .api import AsyncDrapeClient
from .errors import DrapeError

__all__ = ["Pair", "BatchResult", "pairs_from_file", "pairs_from_folders", "output_paths", "run_batch",
           "write_image_atomic", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Pair:
    """Two input images and the output name (without suffix) their result is written under."""

    a: Path
    b: Path
    name: str


@dataclass
class BatchResult:
    done: list[Pair] = field(default_factory=list)
    skipped: list[Pair] = field(default_factory=list)
    failed: list[tuple[Pair, DrapeError | Exception]] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise ValueError(f"{folder}: two images share the stem {path.stem!r} "
                                 f"({found[path.stem].name}, {path.name}); rename one")
            found[path.stem] = path
    return found


def pairs_from_folders(folder_a: Path, folder_b: Path) -> tuple[list[Pair], list[Path]]:
    """Pairs of same-stem images in the two folders, and the images that have no partner."""
    a, b = _images(Path(folder_a)), _images(Path(folder_b))
    pairs = [Pair(a[s], b[s], s) for s in sorted(a.keys() & b.keys())]
    unmatched = [a[s] for s in sorted(a.keys() - b.keys())] + [b[s] for s in sorted(b.keys() - a.keys())]
    return pairs, unmatched


def pairs_from_file(pairs_file: Path, root_a: Path | None = None, root_b: Path | None = None) -> list[Pair]:
    """Read ``a b [name]`` lines (whitespace separated, shell quoting allowed, ``#`` comments).

    Relative names resolve against ``root_a`` / ``root_b`` when given (e.g. VITON-HD's ``test/image`` and
    ``test/cloth``), else against the pairs file's folder. The default output name is ``<stem a>__<stem b>``.
    """
    pairs_file = Path(pairs_file)
    base = pairs_file.parent
    pairs: list[Pair] = []
    names: dict[str, int] = {}
    for lineno, line in enumerate(pairs_file.read_text().splitlines(), 1):
        fields = shlex.split(line, comments=True)
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ValueError(f"{pairs_file}:{lineno}: expected 'a b [name]', got {line.strip()!r}")
        a = (root_a or base) / fields[0]
        b = (root_b or base) / fields[1]
        name = fields[2] if len(fields) == 3 else f"{a.stem}__{b.stem}"
        if name in names:
            raise ValueError(f"{pairs_file}:{lineno}: output name {name!r} repeats line {names[name]}")
        names[name] = lineno
        pairs.append(Pair(a, b, name))
    return pairs


def output_paths(pair: Pair, out_dir: Path, spec: contract.EnsembleSpec, fmt: str, masks: bool) -> list[Path]:
    """Where ``pair``'s outputs go: ``<name>.<fmt>``, plus ``<name>_mask.png`` for recolor when ``masks``."""
    paths = [out_dir / f"{pair.name}.{fmt}"]
    if spec is contract.RECOLOR and masks:
        paths.append(out_dir / f"{pair.name}_mask.png")
    return paths


def write_image_atomic(array: np.ndarray, path: Path) -> None:
    """Encode by suffix and write via a temporary file + rename: readers see the whole image or none."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[path.suffix.lower()]
    buf = io.BytesIO()
    kw = {"quality": 95} if fmt == "JPEG" else {"compress_level": 3}
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format=fmt, **kw)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(array):x}")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


async def run_batch(client: AsyncDrapeClient, spec: contract.EnsembleSpec, pairs: Iterable[Pair], out_dir: Path, *,
                    concurrency: int = 4, fmt: str = "png", masks: bool = False, progress=None) -> BatchResult:
    """Send every pair not yet done, at most ``concurrency`` in flight; never raises for a failed pair.

    ``progress`` is an optional ``rich.progress.Progress`` (already started) to draw the bar on.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    todo: list[Pair] = []
    for pair in pairs:
        if all(p.exists() for p in output_paths(pair, out_dir, spec, fmt, masks)):
            result.skipped.append(pair)
        else:
            todo.append(pair)
    task = None
    if progress is not None:
        task = progress.add_task(f"{spec.name}", total=len(todo), failed=0)
    queue: asyncio.Queue[Pair] = asyncio.Queue()
    for pair in todo:
        queue.put_nowait(pair)

    async def worker() -> None:
        while True:
            try:
                pair = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                outputs = await client.infer(spec, (pair.a, pair.b))
                paths = output_paths(pair, out_dir, spec, fmt, masks)
                # Encoding a large PNG takes tens of ms: off the event loop, so requests keep flowing.
                await asyncio.to_thread(_write_all, outputs, paths)
                result.done.append(pair)
            except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the batch
                result.failed.append((pair, exc))
            if progress is not None:
                progress.update(task, advance=1, failed=len(result.failed))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(todo))))))
    return result


def _write_all(outputs: tuple[np.ndarray, ...], paths: list[Path]) -> None:
    # Main image last: tools that only look for it never see a pair whose mask is still missing.
    for array, path in reversed(list(zip(outputs, paths))):
        write_image_atomic(array, path)
