"""drape-client: call the try-on / recolor service from the shell.

    python -m drape_client tryon --person person.jpg --garment garment.jpg --out tryon.png
    python -m drape_client recolor --on-model photo.jpg --still still.jpg --out recolored.png [--mask-out mask.png]
    python -m drape_client ready
"""
from __future__ import annotations

import argparse
import sys
import time

from PIL import Image

from .api import DrapeClient, DrapeError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="drape-client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="server host:port (default localhost:8001 for grpc, :8000 for http)")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tryon", help="person + garment -> person wearing the garment")
    t.add_argument("--person", required=True)
    t.add_argument("--garment", required=True)
    t.add_argument("--out", required=True, help="output image path (PNG/JPEG by extension)")
    r = sub.add_parser("recolor", help="on-model photo + still -> on-model photo in the still's colour")
    r.add_argument("--on-model", required=True)
    r.add_argument("--still", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--mask-out", help="also write the garment mask here")
    sub.add_parser("ready", help="exit 0 when the server and both ensembles are ready")
    a = ap.parse_args(argv)
    url = a.url or ("localhost:8001" if a.protocol == "grpc" else "localhost:8000")
    with DrapeClient(url, a.protocol, a.timeout) as c:
        if a.cmd == "ready":
            ok = c.ready()
            print("ready" if ok else "not ready")
            return 0 if ok else 1
        t0 = time.perf_counter()
        try:
            if a.cmd == "tryon":
                img = c.tryon(a.person, a.garment)
            else:
                img, mask = c.recolor(a.on_model, a.still)
                if a.mask_out:
                    Image.fromarray(mask).save(a.mask_out)
        except DrapeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        Image.fromarray(img).save(a.out)
        print(f"wrote {a.out} ({img.shape[1]}x{img.shape[0]}) in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
