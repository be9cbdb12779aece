"""DeepSpeed entry point for the gmm family: `deepspeed --num_gpus N training/train_gmm.py [--quick] [...]`.

Trains gmm with the configs in training/configs/ unless --config is given; every other
flag is drape_train.train's (see `python training/train_gmm.py --help`).
"""
import sys
from pathlib import Path

from drape_train.train import finish, main

CONFIGS = [str(Path(__file__).parent / "configs" / f"{n}.yaml") for n in "gmm".split()]

if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv if "--config" in argv else ["--config", *CONFIGS, *argv])
    finish()
