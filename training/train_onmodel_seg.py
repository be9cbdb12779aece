"""DeepSpeed entry point for on-model garment segmentation (a research network: `make` never trains it):

    deepspeed --num_gpus 1 training/train_onmodel_seg.py --variant dual   [drape_train.train flags ...]
    deepspeed --num_gpus 1 training/train_onmodel_seg.py --variant single [drape_train.train flags ...]

--variant picks the config: dual = configs/onmodel_seg.yaml (the U-Net cross-attends to the still),
single = configs/onmodel_seg_single.yaml (the same U-Net on the photo alone). Unless --config / --out are given,
it trains that config into build/onmodel_seg/<variant>/onmodel_seg/. Every other flag is drape_train.train's
(--steps, --seed, --threads, --data, --resume, ...; listed below).
"""
import argparse
import sys
from pathlib import Path

from drape_train.train import finish, main

CONFIGS = {"dual": "onmodel_seg.yaml", "single": "onmodel_seg_single.yaml"}


def wrapper_args(argv: list[str]) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=False)
    ap.add_argument("--variant", choices=sorted(CONFIGS), default="dual", help="which config (default: dual)")
    if {"-h", "--help"} & set(argv):
        ap.print_help()
        print("\ndrape_train.train flags:")
        return ["--help"]
    args, rest = ap.parse_known_args(argv)
    if "--config" not in rest:
        rest = ["--config", str(Path(__file__).parent / "configs" / CONFIGS[args.variant]), *rest]
    if "--out" not in rest:
        rest += ["--out", f"build/onmodel_seg/{args.variant}"]
    return rest


if __name__ == "__main__":
    main(wrapper_args(sys.argv[1:]))
    finish()
