"""Tutorial step 4: train the So-VITS model, `python train.py -c configs/config.json -m 44k`.

Trains into `./logs/<model>/` and resumes from the newest `G_<step>.pth`/`D_<step>.pth` there when run
again with the same command (put pretrained `G_0.pth`/`D_0.pth` there first to fine-tune). Ctrl+C
saves a checkpoint of the last finished step before exiting. The work happens in `training/`.
"""
from __future__ import annotations

import argparse
import sys

from training.launch import TrainOptions, run_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the So-VITS generator and discriminator.")
    parser.add_argument("-c", "--config", default="./configs/config.json", help="JSON file for configuration")
    parser.add_argument("-m", "--model", required=True, help="Model name (run folder logs/<model>)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: all visible CUDA GPUs, else the CPU (slow)")
    parser.add_argument("--nprocs", type=int, help="training processes (default: one per visible GPU, else 1)")
    parser.add_argument("--num_workers", type=int,
                        help="data-loader worker processes per training process (default: 4.1's min(5, CPUs))")
    parser.add_argument("--eval_metrics", action="store_true",
                        help="at each evaluation also log MCD, log-F0 RMSE and speaker similarity of the validation "
                             "resyntheses to TensorBoard (as evaluate.py -m computes them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scorer = None
    if args.eval_metrics:
        from evaluation.ranking import resynthesis_scorer as scorer
    options = TrainOptions(config=args.config, model=args.model, device=args.device, nprocs=args.nprocs,
                           num_workers=args.num_workers, scorer_factory=scorer)
    try:
        return run_training(options)
    except KeyboardInterrupt:
        print("Interrupted; the newest saved checkpoint is kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
