"""Strip training-only data (enc_q, optimizer moments) from a So-VITS checkpoint: a release file about a
third of the size that inference loads like the full file (training cannot resume from it).

    python compress_model.py -c configs/config.json -i logs/44k/G_30400.pth [-o out.pth] [-hf]

A release is refused, except a float32 one with -hf (gives its fp16 copy). Exit status 2 on refusal.
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=str, default="configs/config.json",
                        help="config.json the model was trained with (builds the optimizer skeleton)")
    parser.add_argument("-i", "--input", type=str, default=None, help="full checkpoint G_<step>.pth")
    parser.add_argument("-o", "--output", type=str, default=None,
                        help="output path (default: <input stem>_release[_half]<ext> next to the input)")
    parser.add_argument("-hf", "--half", action="store_true", default=False, help="store weights as float16")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.input:
        print("compress_model.py: give the checkpoint to compress with -i/--input (e.g. logs/44k/G_30400.pth)",
              file=sys.stderr)
        return 2

    from core.atomic import DiskFullError
    from core.checkpoint import CheckpointError
    from core.config import ConfigError, load_config
    from export.release import compress_model
    from generator import build_synthesizer

    try:
        if not os.path.isfile(args.input):
            raise CheckpointError(f"input checkpoint {args.input} not found")
        hps = load_config(args.config)
        result = compress_model(args.input, build_synthesizer(hps), hps, args.config, args.output, args.half)
    except (CheckpointError, ConfigError, DiskFullError) as err:
        print(f"compress_model.py: {err}", file=sys.stderr)
        return 2
    dtype = str(result.dtype).replace("torch.", "")
    print(f"wrote {result.output}: {result.kept} {dtype} tensors ({result.removed} enc_q tensors removed), "
          f"{result.output_bytes / 2**20:.2f} MiB = {100 * result.output_bytes / result.input_bytes:.0f}% "
          f"of {os.path.basename(args.input)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
