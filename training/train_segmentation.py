"""DeepSpeed entry point for the segmentation family: `deepspeed --num_gpus N training/train_segmentation.py [--quick] [...]`.

Trains garment_seg and human_parsing with the configs in training/configs/ unless --config is given; every other
flag is drape_train.train's (see `python training/train_segmentation.py --help`).
"""
import sys
from pathlib import Path

from drape_train.train import finish, main

CONFIGS = [str(Path(__file__).parent / "configs" / f"{n}.yaml") for n in "garment_seg human_parsing".split()]

if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv if "--config" in argv else ["--config", *CONFIGS, *argv])
    finish()
