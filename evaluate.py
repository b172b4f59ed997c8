"""Objective, offline evaluation of conversions and of checkpoints.

Conversion report (one row per -r file; its figures are explained in README.md):
    python evaluate.py -n raw/song.wav -r results/song.wav_0key_alice_sovits_pm.flac -s alice [-t 0]
                       [--json r.json] [--plot r.png]
Checkpoint ranking (resynthesis of the validation clips by every G_<step>.pth; lowest MCD first):
    python evaluate.py -m logs/44k/ -c configs/config.json [--val filelists/val.txt] [--json r.json]
"""
from __future__ import annotations

import argparse
import logging
import sys

from modules.F0Predictor import F0_PREDICTORS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("-n", "--source", help="conversion report: the source file that was converted (e.g. raw/song.wav)")
    add("-r", "--results", nargs="+", default=[], help="converted file(s) of that source (results/...)")
    add("-s", "--speaker", help="target speaker: its clips in --dataset/<speaker>/ are the reference voice")
    add("-t", "--trans", type=float, default=0.0, help="semitones the conversion was transposed by (-t of inference)")
    add("--dataset", default="dataset/44k", help="resampled dataset holding the speakers' clips")
    add("-m", "--model", nargs="+", default=[], help="checkpoint ranking: logs/44k/ (every G_<step>.pth) or G files")
    add("-c", "--config", default="configs/config.json",
        help="config.json (ranking: the model's; report: names the speech encoder for content similarity)")
    add("--val", help="validation file list for the ranking (default: the config's data.validation_files)")
    add("--f0_predictor", default="fcpe", help="F0 tracker: " + ", ".join(F0_PREDICTORS))
    add("--device", help="torch device (default: cuda if available, else cpu)")
    add("--json", help="also write every figure to this JSON file")
    add("--plot", help="conversion report: write a PNG figure (F0 curves over spectrograms) here")
    return p


def _problem(args: argparse.Namespace) -> str | None:
    if args.f0_predictor not in F0_PREDICTORS:
        return f"unknown F0 predictor {args.f0_predictor!r}; choose one of {', '.join(F0_PREDICTORS)}"
    if bool(args.source) == bool(args.model):
        return "give either -n SOURCE -r RESULT... -s SPEAKER (conversion report) or -m logs/44k/ (checkpoint ranking)"
    if args.source and not (args.results and args.speaker):
        return "a conversion report needs -r (the converted file or files) and -s (the target speaker)"
    if args.model and args.plot:
        return "--plot belongs to the conversion report (-n ...)"
    from core.device import device_problem

    return device_problem(args.device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if problem := _problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from tqdm import tqdm

    from core.atomic import DiskFullError
    from core.checkpoint import CheckpointError
    from core.config import ConfigError
    from core.features import DatasetError
    from evaluation.conversion import ConversionJob, EvaluationError, convert_report
    from evaluation.output import checkpoint_table, conversion_table, plot_conversions, write_json
    from evaluation.ranking import rank_checkpoints

    try:
        if args.source:
            job = ConversionJob(args.source, args.results, args.speaker, args.trans, args.dataset, args.config,
                                args.f0_predictor, args.device)
            with tqdm(total=len(args.results), desc="evaluating", unit="file", disable=None, file=sys.stderr) as bar:
                report = convert_report(job, lambda _: bar.update())
            print(conversion_table(report))
            if args.plot:
                plot_conversions(report, args.plot)
                print(f"plot: {args.plot}")
        else:
            with tqdm(desc="resynthesis", unit="clip", disable=None, file=sys.stderr) as bar:
                report = rank_checkpoints(args.model, args.config, args.val, args.f0_predictor, args.device,
                                          bar.update, lambda n: setattr(bar, "total", n))
            print(checkpoint_table(report))
        if args.json:
            write_json(report, args.json)
            print(f"json: {args.json}")
    except (EvaluationError, CheckpointError, ConfigError, DatasetError, DiskFullError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
