"""What the still-consistency fallback costs a recolor request through Triton: fallback on vs off, side by side.

    python benchmarks/recolor_fallback.py                       # quick CPU repository, 16 pairs, 3 rounds
    python benchmarks/recolor_fallback.py --repo build/s16/repo --pairs 32 --rounds 3 --out build/bench/fallback.json

Two tritonservers on free ports: the repository as it is (``still_fallback_margin`` as assembled, default 0.03) and
a copy of it whose ``recolor_postprocess`` has ``still_fallback_margin "inf"`` (what ``drape_export repo
--recolor-fallback-margin inf`` writes). The thin gRPC client (``DrapeClient``, no retries) sends the same pairs to
both, alternating which goes first, one round of warm-up first. Pairs are ``pipelines.make_requests``' recolor
requests (the training data's procedural studio, torch-free, JPEG quality 90): each photo with the still of the
*other* garment of its pair, so the network has a colour to change (a photo with its own still is mostly kept as it
is by the gate, which skips the fallback). Prints p50 / p90 per server, the p50 ratio, and what the recolor gate decided on each
(``drape_recolor_gate_total`` from the metrics port): the share of requests that served the transfer matters, since
those cost the most.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_runners import make_requests  # noqa: E402  (torch-free: the same pairs as the side-by-side benchmark)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = ROOT / "build" / "model_repository" / "cpu"
PARAMETER = re.compile(r'(key: "still_fallback_margin" value \{ string_value: )"[^"]*"')


def without_fallback(repo: Path, into: Path) -> Path:
    """A copy of ``repo`` whose recolor_postprocess never falls back."""
    out = into / "repo_fallback_off"
    shutil.copytree(repo, out, symlinks=True)
    config = out / "recolor_postprocess" / "config.pbtxt"
    text, count = PARAMETER.subn(r'\1"inf"', config.read_text())
    if count != 1:
        raise SystemExit(f"{config}: no still_fallback_margin parameter to turn off (assembled before the fallback?)")
    config.write_text(text)
    return out


def gate_counts(metrics_url: str) -> dict[str, int]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {k: int(float(v)) for k, v in re.findall(r'drape_recolor_gate_total\{decision="(\w+)"\} (\S+)', text)}


def run(repo: Path, n_pairs: int, rounds: int, size: tuple[int, int]) -> dict:
    import numpy as np

    from drape_client import NO_RETRY, DrapeClient
    from drape_serving.server import start_server

    work = make_requests(n_pairs, size)["recolor"]
    logs = ROOT / "build" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        off_repo = without_fallback(repo, Path(tmp))
        with start_server(repo, log_file=logs / "fallback_on.tritonserver.log", ready_timeout=300) as on, \
                start_server(off_repo, log_file=logs / "fallback_off.tritonserver.log", ready_timeout=300) as off:
            servers = {"fallback on": on, "fallback off": off}
            clients = {k: DrapeClient(f"grpc://{s.grpc_url}", timeout_s=300, retry=NO_RETRY) for k, s in servers.items()}
            times: dict[str, list[float]] = {k: [] for k in servers}
            before = {k: gate_counts(s.metrics_url) for k, s in servers.items()}
            try:
                for r in range(rounds + 1):                 # round 0 warms up
                    for i, (photo, still) in enumerate(work):
                        order = list(servers) if (i + r) % 2 == 0 else list(servers)[::-1]
                        for k in order:
                            start = time.perf_counter()
                            clients[k].recolor(photo, still)
                            if r > 0:
                                times[k].append((time.perf_counter() - start) * 1e3)
            finally:
                for c in clients.values():
                    c.close()
            after = {k: gate_counts(s.metrics_url) for k, s in servers.items()}
    rows = {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)), "n": len(v),
                "gate": {d: after[k].get(d, 0) - before[k].get(d, 0) for d in after[k]}} for k, v in times.items()}
    rows["fallback on"]["ratio_p50"] = rows["fallback on"]["p50_ms"] / rows["fallback off"]["p50_ms"]
    return {"rows": rows, "pairs": n_pairs, "rounds": rounds, "size": list(size),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/recolor_fallback.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="CPU model repository (default %(default)s)")
    p.add_argument("--pairs", type=int, default=16, help="photo/still pairs per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds after one warm-up (default %(default)s)")
    p.add_argument("--size", default="256x192", help="rendered photo size HxW (default %(default)s)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args(argv)
    if a.pairs < 2 or a.rounds < 1:
        p.error("--pairs must be >= 2 and --rounds >= 1")
    if not (a.repo / "recolor_postprocess" / "config.pbtxt").is_file():
        p.error(f"--repo {a.repo}: no recolor_postprocess/config.pbtxt (run `make quick` or `drape_export repo`)")
    size = tuple(int(v) for v in a.size.lower().split("x"))
    result = run(a.repo, a.pairs, a.rounds, size)
    for k, r in result["rows"].items():
        ratio = f"  p50 ratio {r['ratio_p50']:.3f}" if "ratio_p50" in r else ""
        print(f"{k:<13} n={r['n']} p50 {r['p50_ms']:.1f} ms p90 {r['p90_ms']:.1f} ms  gate {r['gate']}{ratio}")
    print(f"load average at the end {result['machine']['loadavg_at_end']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
