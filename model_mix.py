"""Static voice mixing (the web UI's tools tab as a command): every weight tensor becomes Σ_i w_i · model_i.

    python model_mix.py -i a.pth b.pth c.pth -r 50 30 20 [--mode convex|linear] [-o output.pth] [-c config.json]

convex (default): w = softmax(percent / 100), summing to 1 (50/30/20 -> 0.39/0.32/0.29); linear: percent / 100.
All models must share one config. Exit status 2 on refusal.
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=str, nargs="+", required=True, help="checkpoints to mix (G_*.pth)")
    parser.add_argument("-r", "--rate", type=float, nargs="+", default=None,
                        help="percentage per model (default 100 each, as in the web UI)")
    parser.add_argument("--mode", choices=("convex", "linear"), default="convex",
                        help="convex: softmax(percent/100); linear: percent/100")
    parser.add_argument("-o", "--output", type=str, default=os.path.join(os.curdir, "output.pth"),
                        help="output file (default ./output.pth)")
    parser.add_argument("-c", "--config", type=str, default=None,
                        help="optional config.json to check the models against")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rates = args.rate if args.rate is not None else [100.0] * len(args.input)

    from core.atomic import DiskFullError
    from core.checkpoint import CheckpointError
    from core.config import ConfigError, load_config
    from export.mix import mix_model, mix_weights
    from generator import build_synthesizer

    try:
        net_g = build_synthesizer(load_config(args.config)) if args.config else None
        output = mix_model(args.input, rates, args.mode, args.output, net_g=net_g, config_path=args.config or "")
    except (CheckpointError, ConfigError, DiskFullError) as err:
        print(f"model_mix.py: {err}", file=sys.stderr)
        return 2
    weights = mix_weights(rates, args.mode).tolist()
    listing = ", ".join(f"{os.path.basename(p)} {w:.4g}" for p, w in zip(args.input, weights))
    print(f"wrote {output} ({args.mode} weights: {listing})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
