"""``python -m drape_export <command>`` / ``drape-export <command>``.

Subcommands register themselves in ``COMMANDS`` (name -> (add_arguments, run));
``main()`` is a plain dispatcher. Steps: ``onnx`` (checkpoints -> ONNX FP32 + FP16), ``trt`` (ONNX -> TensorRT
plans, GPU machines), ``repo`` (-> Triton model repository), ``sweep`` (measure serving settings: runs the
benchmark ``benchmarks/sweep.py`` of the source checkout).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .repository import DEFAULT_SETTINGS, TARGETS, AssemblyError, ServingSettings, assemble


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULT_SETTINGS
    parser.add_argument("--instances", type=int, default=d.instances, help="instances per network model (default: %(default)s)")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=d.intra_op_threads,
        help="ONNX Runtime intra-op threads per CPU network instance; 0 = one per core (default: %(default)s)",
    )
    parser.add_argument("--max-queue-delay-us", type=int, default=d.max_queue_delay_us,
                        help="dynamic batcher queue delay of the networks (default: %(default)s)")
    parser.add_argument("--max-queue-size", type=int, default=d.max_queue_size,
                        help="queued requests per network before Triton rejects with UNAVAILABLE (default: %(default)s)")
    parser.add_argument("--entry-queue-size", type=int, default=d.entry_queue_size,
                        help="queued requests per preprocess model (the ensembles' entry) (default: %(default)s)")
    parser.add_argument("--prepost-instances", type=int, default=d.prepost_instances,
                        help="instances per python pre/post model (default: %(default)s)")
    parser.add_argument("--warmup-batch", type=int, default=d.warmup_batch,
                        help="zero warmup batch every network instance runs at load, capped at its max batch; 0 = none "
                             "(default: the max batch on cpu, 1 on gpu). On CPU the memory it takes is held from the "
                             "start: lower it for large resolutions")
    parser.add_argument("--recolor-keep-below", type=float, default=d.recolor_keep_below,
                        help="recolor returns the photo unchanged where the network would change the garment by less "
                             "than this mean CIE76 (its colour is taken to be right already); 0 = always apply "
                             "(default: %(default)s)")
    parser.add_argument("--recolor-fallback-margin", type=float, default=d.recolor_fallback_margin,
                        help="recolor serves the classical Gaussian colour transfer instead of the network's output "
                             "where that is closer to the still's shading-free colours (sliced Wasserstein distance) "
                             "by more than this; inf = never (default: %(default)s)")


def settings_from_args(args: argparse.Namespace) -> ServingSettings:
    return ServingSettings(
        instances=args.instances,
        intra_op_threads=args.intra_op_threads,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=DEFAULT_SETTINGS.preferred_batch_sizes,
        max_queue_size=args.max_queue_size,
        entry_queue_size=args.entry_queue_size,
        prepost_instances=args.prepost_instances,
        warmup_batch=args.warmup_batch,
        recolor_keep_below=args.recolor_keep_below,
        recolor_fallback_margin=args.recolor_fallback_margin,
    )


def _add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="cpu: ONNX Runtime in the python backend; gpu: TensorRT plans")
    parser.add_argument("--onnx-dir", default="build/onnx", help="directory of <network>/{model.onnx,card.json} (default: %(default)s)")
    parser.add_argument("--out", required=True, help="model repository to create or add a version to, e.g. build/model_repository/cpu")
    parser.add_argument("--height", type=int, default=None, help="expected model height (must match the cards)")
    parser.add_argument("--width", type=int, default=None, help="expected model width (must match the cards)")
    parser.add_argument("--trt-version", default=None, help="gpu: TensorRT version of the serving runtime (default: detected)")
    parser.add_argument("--gpu-arch", default=None, help="gpu: compute capability of the serving GPU, e.g. 9.0 (default: detected)")
    _add_settings_arguments(parser)


def _run_repo(args: argparse.Namespace) -> int:
    from drape_core.plans import detect_runtime

    try:
        report = assemble(
            args.onnx_dir,
            args.out,
            target=args.target,
            height=args.height,
            width=args.width,
            settings=settings_from_args(args),
            plan_runtime=detect_runtime(args.trt_version, args.gpu_arch) if args.target == "gpu" else None,
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
    parser.add_argument("--networks", nargs="*", default=None, help="subset to export (default: the five served; research networks such as onmodel_seg only when named)")


def _run_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .onnx_export import NETWORKS, export_all  # imports torch: only this subcommand needs it

    cards = export_all(Path(args.checkpoints), Path(args.out), tuple(args.networks or NETWORKS))
    for card in cards:
        o = card["onnx"]
        f16 = o["fp16"]["vs_fp32_on_real"]
        ms = o["fp16"]["ort_cpu_ms_batch1"]
        print(f"{card['name']:<14} opset {o['opset']} {o['simplifier']} {o['nodes_exported']}->{o['nodes']} nodes  "
              f"max|ORT-PyTorch| random {o['parity_random_max_abs_diff']:.1e} real {o['parity_real']['max_abs']:.1e} "
              f"(checked per output)  FP16 vs FP32 max {f16['max_abs']:.1e} mean {f16['mean_abs']:.1e}  "
              f"ORT CPU b1 {ms['fp32']:.0f}/{ms['fp16']:.0f} ms  -> {Path(args.out) / card['name']}")
    return 0


def _add_trt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx-dir", default="build/onnx", help="exported networks; plans are written next to them (default: %(default)s)")
    parser.add_argument("--networks", nargs="*", default=None, help="subset to build (default: every <onnx-dir>/*/card.json)")
    parser.add_argument("--config", default=None, help="YAML build config (default: drape_export/trt.yaml)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default=None, help="override the config's precision")
    parser.add_argument("--min-batch", type=int, default=None)
    parser.add_argument("--opt-batch", type=int, default=None)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--timing-cache", default=None, help="timing cache file reused between builds")
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve config, graphs and profiles and print them; do not call TensorRT")


def _run_trt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydantic import ValidationError

    from .tensorrt_build import TrtBuildConfig, TrtError, build_network, plan_build

    try:
        cfg = TrtBuildConfig.load(args.config, precision=args.precision, min_batch=args.min_batch,
                                  opt_batch=args.opt_batch, max_batch=args.max_batch, timing_cache=args.timing_cache)
        root = Path(args.onnx_dir)
        dirs = [root / n for n in args.networks] if args.networks else sorted(p.parent for p in root.glob("*/card.json"))
        if not dirs:
            raise TrtError(f"no exported networks in {root}")
        plans = [plan_build(d, cfg) for d in dirs]
    except (TrtError, ValidationError) as exc:
        print(f"drape-export trt: error: {exc}", file=sys.stderr)
        return 2
    for plan in plans:
        shapes = ", ".join(f"{n} {list(lo)}..{list(hi)} (opt {list(opt)})" for n, (lo, opt, hi) in plan.profile.items())
        print(f"{plan.name:<14} {plan.onnx_path.name} -> {plan.plan_path}  profile: {shapes}")
    if args.dry_run:
        return 0
    import tempfile

    from .onnx_export import RealSamples

    try:
        with tempfile.TemporaryDirectory(prefix="drape-trt-") as tmp:
            samples = {}
            for plan in plans:
                hw = plan.card.hw
                if hw not in samples:
                    samples[hw] = RealSamples(Path(tmp) / f"{hw[0]}x{hw[1]}", *hw)
                card = build_network(plan, cfg, samples[hw])
                t = card["tensorrt"]
                worst = max(v["p999_abs"] for v in t["validation_vs_ort_fp32"].values())
                print(f"{plan.name:<14} TensorRT {t['version']} sm {t['compute_capability']} ({t['gpu_name']}): "
                      f"{t['plan_bytes'] / 2**20:.1f} MiB in {t['build_s']} s, p99.9 |TRT-ORT| {worst:.2e}")
    except TrtError as exc:
        print(f"drape-export trt: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="the arguments of benchmarks/sweep.py (sweep --help)")


def _run_sweep(args: argparse.Namespace) -> int:
    return forward_sweep(args.argv)


def forward_sweep(argv: list[str]) -> int:
    """``sweep`` is a benchmark (it starts tritonserver: serving comes after export), not part of this package:
    run the source checkout's ``benchmarks/sweep.py`` as a script with the same arguments, ``--help`` included."""
    import runpy
    from pathlib import Path

    import drape_core

    script = Path(drape_core.__file__).resolve().parents[2] / "benchmarks" / "sweep.py"
    if not script.is_file():
        print(f"drape-export sweep: error: {script} not found: `python -m drape_export sweep` needs a source "
              "checkout of drape (it runs the repository's benchmarks/sweep.py)", file=sys.stderr)
        return 2
    saved, sys.argv = sys.argv, [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")  # its exit status leaves as SystemExit
    finally:
        sys.argv = saved
    return 0


# name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "onnx": ("export trained checkpoints to ONNX (FP32 + FP16) and check parity with ONNX Runtime", _add_onnx_arguments, _run_onnx),
    "trt": ("build TensorRT FP16 plans from the exported ONNX (GPU machines) and validate them", _add_trt_arguments, _run_trt),
    "repo": ("assemble a Triton model repository from exported networks", _add_repo_arguments, _run_repo),
    "sweep": ("measure serving settings (instances, threads, queue delay) against a real tritonserver", _add_sweep_arguments, _run_sweep),
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:  # all of it to the benchmark's parser: argparse's REMAINDER refuses a leading --opt
        return forward_sweep(argv[1:])
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
