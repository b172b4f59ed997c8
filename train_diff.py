"""Train the shallow-diffusion model into `env.expdir`: `python train_diff.py -c configs/diffusion.yaml`.

Resumes from the newest readable `model_<N>.pt` there, at the batch after it (a pretrained `model_0.pt`
fine-tunes); Ctrl+C saves the last step. One run per folder.
"""
from __future__ import annotations

import argparse
import sys

from diffusion.solver import run_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the shallow-diffusion model (Unit2Mel).")
    parser.add_argument("-c", "--config", type=str, required=True, help="path to the config file")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="data-loader worker processes (default: train.num_workers of the config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_training(args.config, num_workers=args.num_workers)


if __name__ == "__main__":
    sys.exit(main())
