"""Tutorial step 2: split dataset/44k into filelists/train.txt + val.txt and write configs/config.json
and configs/diffusion.yaml from the templates."""
from __future__ import annotations

import argparse
import logging
import sys

from vencoder import ENCODER_DIMS  # stdlib-only import: --help stays fast

LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-8s | %(name)s:%(funcName)s:%(lineno)d - %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train_list", type=str, default="./filelists/train.txt", help="path to train list")
    parser.add_argument("--val_list", type=str, default="./filelists/val.txt", help="path to val list")
    parser.add_argument("--source_dir", type=str, default="./dataset/44k", help="path to source dir")
    parser.add_argument("--speech_encoder", type=str, default="vec768l12", choices=ENCODER_DIMS,
                        help="content encoder")
    parser.add_argument("--vol_aug", action="store_true",
                        help="loudness embedding and volume augmentation (train.vol_aug, model.vol_embedding)")
    parser.add_argument("--tiny", action="store_true", help="start from the tiny template (faster, smaller model)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the train/val split (default: random)")
    parser.add_argument("--overwrite_config", action="store_true",
                        help="write the templates over your values in configs/ (speaker ids are kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run preprocess_flist_config.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    stage_logger = logging.getLogger("prep.flist_config")
    if stage_logger.level == logging.NOTSET:
        stage_logger.setLevel(logging.INFO)

    from core.atomic import DiskFullError
    from prep.flist_config import DatasetError, preprocess_flist_config

    try:
        result = preprocess_flist_config(args.train_list, args.val_list, args.source_dir, args.speech_encoder,
                                         vol_aug=args.vol_aug, tiny=args.tiny, seed=args.seed,
                                         overwrite_config=args.overwrite_config)
    except (DatasetError, DiskFullError) as err:
        print(f"preprocess_flist_config.py: {err}", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"preprocess_flist_config.py: {len(result.skipped)} skipped (not in the file lists): "
              + ", ".join(result.skipped), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
