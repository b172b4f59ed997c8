"""Tutorial step 2.4.3: content units, F0, spectrogram (and volume / diffusion mels) for every clip.

    python preprocess_hubert_f0.py --f0_predictor rmvpe [--use_diff] [--num_processes N]
"""
from __future__ import annotations

import argparse
import logging
import sys

from modules.F0Predictor import F0_PREDICTORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--device", type=str, default=None,
                        help="device for the models (default: cuda if available, else cpu)")
    parser.add_argument("--in_dir", type=str, default="dataset/44k", help="path to input dir")
    parser.add_argument("--use_diff", action="store_true", help="also write the shallow-diffusion files")
    parser.add_argument("--f0_predictor", type=str, default="rmvpe", choices=F0_PREDICTORS,
                        help="F0 predictor: " + ", ".join(F0_PREDICTORS) + " (default rmvpe)")
    parser.add_argument("--num_processes", type=int, default=1, help="worker processes; 0 = one per CPU core")
    parser.add_argument("--config", type=str, default="configs/config.json", help="So-VITS config")
    parser.add_argument("--diffusion_config", type=str, default="configs/diffusion.yaml",
                        help="diffusion config (read only with --use_diff)")
    parser.add_argument("--overwrite", action="store_true", help="recompute files that already exist")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(message)s")
    log = logging.getLogger("preprocess_hubert_f0")

    from core.atomic import DiskFullError
    from core.checkpoint import CheckpointError
    from core.config import ConfigError, load_config
    from core.device import device_problem
    from prep.features import extract_features, settings_from_config

    if problem := device_problem(args.device):
        print(f"error: {problem}", file=sys.stderr)
        return 1

    try:
        hps = load_config(args.config)
        diffusion = load_config(args.diffusion_config) if args.use_diff else None
        settings = settings_from_config(hps, args.f0_predictor, args.use_diff, args.device, diffusion,
                                        overwrite=args.overwrite)
    except (ConfigError, KeyError, AttributeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    log.info("Using SpeechEncoder: %s", settings.speech_encoder)
    log.info("Using extractor: %s", settings.f0_predictor)
    log.info("Using diff Mode: %s", settings.use_diff)
    try:
        summary = extract_features(settings, args.in_dir, args.num_processes)
    except (FileNotFoundError, CheckpointError, ImportError, DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    log.info("%d clips processed, %d already up to date, %d failed",
             summary.done, summary.up_to_date, len(summary.failed))
    for clip, reason in summary.failed:
        log.error("skipped %s: %s", clip, reason)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
