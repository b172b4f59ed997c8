"""Tutorial step 1: resample `dataset_raw/<speaker>/*.wav` to 44.1 kHz mono 16-bit WAV in `dataset/44k/`."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sr2", type=int, default=44100, help="sampling rate")
    parser.add_argument("--in_dir", type=str, default="./dataset_raw", help="path to source dir")
    parser.add_argument("--out_dir2", type=str, default="./dataset/44k", help="path to target dir")
    parser.add_argument("--skip_loudnorm", action="store_true",
                        help="skip the peak normalisation to full scale (values beyond full scale are clipped)")
    parser.add_argument("--num_processes", type=int, default=None,
                        help="worker processes; 0 = one per CPU; default: 30 if >60 CPUs, CPUs-2 if >4, else 1")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo clips whose output is already newer than the source "
                             "(needed after changing --sr2 or --skip_loudnorm)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run resample.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sr2 <= 0:
        parser.error(f"--sr2 must be a positive sample rate, got {args.sr2}")
    if args.num_processes is not None and args.num_processes < 0:
        parser.error(f"--num_processes must be >= 0, got {args.num_processes}")

    from core.atomic import DiskFullError
    from prep.resample import format_summary, resample_dataset

    try:
        summary = resample_dataset(args.in_dir, args.out_dir2, target_sr=args.sr2,
                                   loudnorm=not args.skip_loudnorm, workers=args.num_processes,
                                   overwrite=args.overwrite)
    except (FileNotFoundError, DiskFullError) as err:
        print(f"resample.py: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary, args.sr2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
