"""Gate a locust run on its stats CSV: exit 1 if any request failed, too few ran, or the p95 is over budget.

    python client/load_check.py build/load/drape_stats.csv --p95-ms 3000 [--min-requests 10]

Reads the ``<prefix>_stats.csv`` that ``locust --csv <prefix>`` writes (and ``<prefix>_failures.csv`` next to it,
to show why requests failed). The thresholds apply to the "Aggregated" row; every row is printed so a slow size
or protocol stands out. Used by ``make load``; locust's own exit code only covers failures, not latency.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    type: str
    name: str
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # locust writes "N/A" for rows without samples
        return None


def read_stats(path: Path) -> list[Row]:
    with open(path, newline="") as f:
        rows = [Row(r["Type"], r["Name"], int(r["Request Count"]), int(r["Failure Count"]), _num(r["50%"]),
                    _num(r["95%"]), _num(r["99%"]), _num(r["Requests/s"]) or 0.0) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def read_failures(path: Path) -> list[tuple[str, str, int]]:
    """(name, error, occurrences) from the failures CSV, if there is one."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [(f"{r['Method']} {r['Name']}", r["Error"], int(r["Occurrences"])) for r in csv.DictReader(f)]


def check(rows: list[Row], p95_ms: float | None, min_requests: int) -> list[str]:
    """Reasons the run fails its gate (empty: it passes)."""
    total = next((r for r in rows if r.name == "Aggregated"), None)
    if total is None:
        return ["no 'Aggregated' row in the stats CSV"]
    problems = []
    if total.requests < min_requests:
        problems.append(f"only {total.requests} requests completed (need >= {min_requests})")
    if total.failures:
        problems.append(f"{total.failures} of {total.requests} requests failed")
    if p95_ms is not None:
        if total.p95_ms is None:
            problems.append("no p95 (no successful samples)")
        elif total.p95_ms > p95_ms:
            problems.append(f"p95 {total.p95_ms:.0f} ms exceeds the {p95_ms:.0f} ms budget")
    return problems


def _print(rows: list[Row], failures: list[tuple[str, str, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="locust stats")
    for col in ("type", "name", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        table.add_column(col, justify="left" if col in ("type", "name") else "right")
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    for r in rows:
        table.add_row(r.type, r.name, str(r.requests), str(r.failures), fmt(r.p50_ms), fmt(r.p95_ms),
                      fmt(r.p99_ms), f"{r.rps:.2f}", style="bold" if r.name == "Aggregated" else None)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    for name, error, n in failures[:20]:
        console.print(f"[red]failure[/] x{n} {name}: {error}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="load_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stats_csv", type=Path, help="locust's <prefix>_stats.csv")
    ap.add_argument("--p95-ms", type=float, default=None, help="fail if the aggregated p95 exceeds this")
    ap.add_argument("--min-requests", type=int, default=1, help="fail if fewer requests ran (default %(default)s)")
    a = ap.parse_args(argv)
    if not a.stats_csv.is_file():
        print(f"load_check: {a.stats_csv} not found (did locust run?)", file=sys.stderr)
        return 1
    rows = read_stats(a.stats_csv)
    failures = read_failures(a.stats_csv.with_name(a.stats_csv.name.replace("_stats.csv", "_failures.csv")))
    _print(rows, failures)
    problems = check(rows, a.p95_ms, a.min_requests)
    for p in problems:
        print(f"load_check: FAIL: {p}", file=sys.stderr)
    if not problems:
        print("load_check: OK" + (f" (p95 budget {a.p95_ms:.0f} ms)" if a.p95_ms is not None else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
