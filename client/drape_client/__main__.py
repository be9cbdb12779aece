"""drape-client: call the try-on / recolor service from the shell.

single pair:
  drape-client tryon   --person person.jpg --garment garment.jpg --out tryon.png
  drape-client recolor --on-model photo.jpg --still still.jpg --out recolored.png [--mask-out mask.png]
folder batch (resumable: existing outputs are skipped; non-zero exit if any pair failed):
  drape-client tryon   --pairs test_pairs.txt [--person-dir test/image --garment-dir test/cloth] --out-dir out/
  drape-client recolor --on-model-dir on_model/ --still-dir stills/ --out-dir out/ --masks --concurrency 4
health and metadata:
  drape-client ready [--wait 60]
  drape-client info

--url takes host:port (protocol from --protocol, default gRPC) or grpc://, grpcs://, http://, https:// URLs;
grpcs/https verify the server certificate (system roots, or --ca-certs).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from drape_core import contract

from .api import AsyncDrapeClient, DrapeClient, Endpoint, RetryPolicy
from .batch import BatchResult, pairs_from_file, pairs_from_folders, run_batch, write_image_atomic
from .errors import DrapeError

_MAX_LISTED_FAILURES = 20


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="drape-client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None,
                    help="server address: host:port or a grpc[s]:// / http[s]:// URL "
                         "(default localhost:8001 for gRPC, localhost:8000 for HTTP)")
    ap.add_argument("--protocol", choices=("grpc", "http"), default=None, help="for a bare host:port (default grpc)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds (default %(default)s)")
    ap.add_argument("--retries", type=int, default=3,
                    help="retries on UNAVAILABLE/RESOURCE_EXHAUSTED (HTTP 503/429) (default %(default)s)")
    ap.add_argument("--ca-certs", default=None, help="PEM file of CA certificates to verify a TLS server with")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{tryon,recolor,ready,info}")

    for name, (a, b), help_ in (
        ("tryon", ("person", "garment"), "person + garment -> the person wearing the garment"),
        ("recolor", ("on-model", "still"), "on-model photo + still -> the on-model photo in the still's colour"),
    ):
        p = sub.add_parser(name, help=help_, description=help_ + ". Give --%s/--%s/--out for one pair, or "
                           "--pairs and/or --%s-dir/--%s-dir with --out-dir for a batch." % (a, b, a, b))
        one = p.add_argument_group("one pair")
        one.add_argument(f"--{a}", help=f"{a} image (JPEG/PNG)")
        one.add_argument(f"--{b}", help=f"{b} image (JPEG/PNG)")
        one.add_argument("--out", help="output image path (PNG or JPEG by extension)")
        if name == "recolor":
            one.add_argument("--mask-out", help="also write the garment mask here")
        many = p.add_argument_group("batch")
        many.add_argument("--pairs", type=Path, help=f"file of '{a} {b} [output name]' lines")
        many.add_argument(f"--{a}-dir", type=Path, help=f"folder of {a} images (pairs matched by file stem, or "
                          f"the root of --pairs' first column)")
        many.add_argument(f"--{b}-dir", type=Path, help=f"folder of {b} images (or the root of --pairs' second column)")
        many.add_argument("--out-dir", type=Path, help="write <name>.<format> here; existing outputs are skipped")
        many.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
        many.add_argument("--format", choices=("png", "jpg"), default="png", help="output format (default png)")
        if name == "recolor":
            many.add_argument("--masks", action="store_true", help="also write <name>_mask.png")

    r = sub.add_parser("ready", help="exit 0 when the server and both ensembles are ready")
    r.add_argument("--wait", type=float, default=0.0, help="keep polling up to this many seconds")
    sub.add_parser("info", help="server version; versions and readiness of the ensembles and every model they run")
    return ap


def _url(a: argparse.Namespace) -> str:
    if a.url:
        return a.url
    return "localhost:8000" if a.protocol == "http" else "localhost:8001"


def _retry(a: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(attempts=max(0, a.retries) + 1)


def _single(a: argparse.Namespace, spec: contract.EnsembleSpec, first: str, second: str) -> int:
    with DrapeClient(_url(a), a.protocol, a.timeout, retry=_retry(a), ca_certs=a.ca_certs) as c:
        t0 = time.perf_counter()
        try:
            outputs = c.infer(spec, (first, second))
        except DrapeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        write_image_atomic(outputs[0], Path(a.out))
        if spec is contract.RECOLOR and a.mask_out:
            write_image_atomic(outputs[1], Path(a.mask_out))
        img = outputs[0]
        print(f"wrote {a.out} ({img.shape[1]}x{img.shape[0]}) in {time.perf_counter() - t0:.2f} s")
    return 0


def _summary(result: BatchResult, spec: contract.EnsembleSpec, out_dir: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    if result.failed:
        table = Table(title=f"{len(result.failed)} failed", title_justify="left")
        for col in ("pair", "error", "message"):
            table.add_column(col, overflow="fold")
        for pair, exc in result.failed[:_MAX_LISTED_FAILURES]:
            message = getattr(exc, "reason", None) or str(exc)
            table.add_row(f"{pair.name}\n{pair.a}\n{pair.b}", type(exc).__name__, message)
        console.print(table)
        if len(result.failed) > _MAX_LISTED_FAILURES:
            console.print(f"... and {len(result.failed) - _MAX_LISTED_FAILURES} more")
    for path in result.unmatched[:_MAX_LISTED_FAILURES]:
        console.print(f"[yellow]warning[/]: {path} has no partner with the same stem in the other folder")
    rate = len(result.done) / seconds if seconds > 0 else 0.0
    console.print(f"{spec.name}: {len(result.done)} written, {len(result.skipped)} already done (skipped), "
                  f"{len(result.failed)} failed, {len(result.unmatched)} unmatched -> {out_dir} "
                  f"in {seconds:.1f} s ({rate:.2f} pairs/s)")


def _batch(a: argparse.Namespace, spec: contract.EnsembleSpec, dir_a: Path | None, dir_b: Path | None,
           masks: bool) -> int:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    unmatched: list[Path] = []
    try:
        if a.pairs:
            pairs = pairs_from_file(a.pairs, dir_a, dir_b)
        else:
            pairs, unmatched = pairs_from_folders(dir_a, dir_b)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def go() -> BatchResult:
        client = AsyncDrapeClient(_url(a), a.protocol, a.timeout, retry=_retry(a), ca_certs=a.ca_certs,
                                  max_connections=max(1, a.concurrency))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TimeRemainingColumn())
        try:
            with Progress(*columns, transient=False) as progress:
                return await run_batch(client, spec, pairs, a.out_dir, concurrency=a.concurrency, fmt=a.format,
                                       masks=masks, progress=progress)
        finally:
            await client.close()

    t0 = time.perf_counter()
    result = asyncio.run(go())
    result.unmatched = unmatched
    _summary(result, spec, a.out_dir, time.perf_counter() - t0)
    return 0 if result.ok else 1


def _ensemble(a: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    spec = contract.ENSEMBLES[a.cmd]
    ka, kb = ("person", "garment") if spec is contract.TRYON else ("on_model", "still")
    first, second = getattr(a, ka), getattr(a, kb)
    dir_a, dir_b = getattr(a, f"{ka}_dir"), getattr(a, f"{kb}_dir")
    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    single = first or second or a.out
    batch = a.pairs or dir_a or dir_b or a.out_dir
    if single and batch:
        ap.error(f"{a.cmd}: give either one pair ({flag(ka)}/{flag(kb)}/--out) or a batch, not both")
    if single:
        if not (first and second and a.out):
            ap.error(f"{a.cmd}: one pair needs {flag(ka)}, {flag(kb)} and --out")
        return _single(a, spec, first, second)
    if not a.out_dir:
        ap.error(f"{a.cmd}: a batch needs --out-dir")
    if not a.pairs and not (dir_a and dir_b):
        ap.error(f"{a.cmd}: a batch needs --pairs, or both {flag(ka + '_dir')} and {flag(kb + '_dir')}")
    if a.concurrency < 1:
        ap.error("--concurrency must be >= 1")
    return _batch(a, spec, dir_a, dir_b, getattr(a, "masks", False))


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    try:
        Endpoint.parse(_url(a), a.protocol)
    except ValueError as e:
        ap.error(str(e))
    if a.cmd in contract.ENSEMBLES:
        return _ensemble(a, ap)
    with DrapeClient(_url(a), a.protocol, a.timeout, retry=_retry(a), ca_certs=a.ca_certs) as c:
        if a.cmd == "ready":
            if a.wait > 0:
                try:
                    c.wait_ready(a.wait)
                except DrapeError:
                    pass
            ok = c.ready()
            print("ready" if ok else "not ready")
            return 0 if ok else 1
        try:
            meta = c.server_metadata()
            models = c.models()
        except DrapeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{c.endpoint}: {meta.get('name', '?')} {meta.get('version', '?')}")
        for m in models:
            print(f"  {m.name:<22} versions {','.join(m.versions) or '-':<6} {m.platform:<10} "
                  f"{'READY' if m.ready else 'NOT READY'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
