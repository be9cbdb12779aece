"""``python -m drape_export <command>`` / ``drape-export <command>``.

Subcommands register themselves in ``COMMANDS`` (name -> (add_arguments, run));
``main()`` is a plain dispatcher, so new steps (e.g. ``onnx``) slot in beside ``repo``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .repository import DEFAULT_INTRA_OP_THREADS, TARGETS, AssemblyError, assemble


def _add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="cpu: ONNX Runtime in the python backend; gpu: TensorRT plans")
    parser.add_argument("--onnx-dir", default="build/onnx", help="directory of <network>/{model.onnx,card.json} (default: %(default)s)")
    parser.add_argument("--out", required=True, help="model repository to (re)create, e.g. build/model_repository/cpu")
    parser.add_argument("--height", type=int, default=None, help="expected model height (must match the cards)")
    parser.add_argument("--width", type=int, default=None, help="expected model width (must match the cards)")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=DEFAULT_INTRA_OP_THREADS,
        help="ONNX Runtime intra-op threads per CPU network instance; 0 = one per core (default: %(default)s)",
    )


def _run_repo(args: argparse.Namespace) -> int:
    try:
        report = assemble(
            args.onnx_dir,
            args.out,
            target=args.target,
            height=args.height,
            width=args.width,
            intra_op_num_threads=args.intra_op_threads,
        )
    except AssemblyError as exc:
        print(f"drape-export repo: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _add_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", default="build/checkpoints",
                        help="training output: <network>/{weights.pt,card.json} (default: %(default)s)")
    parser.add_argument("--out", default="build/onnx", help="writes <network>/{model.onnx,card.json} (default: %(default)s)")
    parser.add_argument("--networks", nargs="*", default=None, help="subset to export (default: all five)")


def _run_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .onnx_export import NETWORKS, PARITY_TOL, export_all  # imports torch: only this subcommand needs it

    cards = export_all(Path(args.checkpoints), Path(args.out), tuple(args.networks or NETWORKS))
    for card in cards:
        o = card["onnx"]
        print(f"{card['name']:<14} opset {o['opset']}  parity max|ORT-PyTorch| = {o['parity_max_abs_diff']:.2e} "
              f"(<= {PARITY_TOL:g})  -> {Path(args.out) / card['name'] / 'model.onnx'}")
    return 0


# name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "onnx": ("export trained checkpoints to ONNX and check parity with ONNX Runtime", _add_onnx_arguments, _run_onnx),
    "repo": ("assemble a Triton model repository from exported networks", _add_repo_arguments, _run_repo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drape-export", description="drape export steps")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
