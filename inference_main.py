"""Tutorial step 3.1: convert songs in raw/ to the target voices, written to results/.

    python inference_main.py -m logs/44k/G_30400.pth -c configs/config.json -n song.wav -t 0 -s speaker

Every input (-n) is converted for every speaker (-s); -t gives one transposition per input (the first
value repeats for inputs without one). Output: results/{name}_{key}_{speaker}[_{ratio}]_{mode}_{f0p}.{format},
mode saying what ran: sovits, sovdiff (-shd: shallow diffusion after So-VITS) or diff (-od: no -m/-c read).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from inference import command
from inference.command import check_args, convert_to_results, result_name, user_errors

__all__ = ["build_parser", "check_args", "convert_to_results", "main", "resolve_input", "result_name", "user_errors"]
log = logging.getLogger("inference_main")


def build_parser() -> argparse.ArgumentParser:
    """The conversion options (inference/command.py) under this script's help text."""
    return command.build_parser(__doc__)


def resolve_input(clean_name: str) -> str:
    """raw/<name> (+.wav without extension); FileNotFoundError listing raw/ when it is not there."""
    path = f"raw/{clean_name}" + ("" if "." in clean_name else ".wav")
    if not os.path.isfile(path):
        present = sorted(p.name for p in Path("raw").iterdir() if p.is_file() and p.name != "README.md") \
            if os.path.isdir("raw") else []
        listing = f" (raw/ has: {', '.join(present[:10])})" if present else " (raw/ is empty)"
        raise FileNotFoundError(f"{path} not found: inputs are read from raw/; put it there or fix -n{listing}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if problem := check_args(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from inference.infer_tool import InferOptions, Svc, fill_a_to_b, format_wav
    from inference.speaker_mix import load_spk_mix_map
    from modules.audio_io import AudioReadError

    trans = list(args.trans)
    fill_a_to_b(trans, args.clean_names)
    try:
        inputs = [resolve_input(name) for name in args.clean_names]
        spk_mix_map = load_spk_mix_map() if args.use_spk_mix else {}
        args.use_spk_mix = len(spk_mix_map) > 1  # 4.1: a one-entry map silently turns mixing off
        options = [InferOptions.from_args(args, tran) for tran in trans]  # fail before loading anything
        log.info("Using F0 predictor: %s", args.f0_predictor)
        # -cm, or 4.1's default file for -cr with or without -fr; nothing without -cr
        cluster = "" if args.cluster_infer_ratio == 0 else args.cluster_model_path or \
            command.default_cluster_path(args.feature_retrieval)
        svc = Svc(args.model_path, args.config_path, args.device, cluster, args.enhance,
                  args.diffusion_model_path, args.diffusion_config_path, args.shallow_diffusion,
                  args.only_diffusion, args.use_spk_mix, args.feature_retrieval, onnx=args.onnx, bf16=args.bf16)
        args.use_spk_mix = args.use_spk_mix and len(svc.spk2id) > 1
        speakers = [svc.song_speaker(spk, options[0]) for spk in ([spk_mix_map] if args.use_spk_mix
                                                                   else args.spk_list)]
        if (args.shallow_diffusion or args.only_diffusion) and svc.output_mode == "sovits":
            log.warning("diffusion did not run: converting with So-VITS only, files are named _sovits_")
        failed = []
        for clean_name, path, tran, opts in zip(args.clean_names, inputs, trans, options):
            try:  # an unusable input is skipped; the others are still converted
                wav = format_wav(path)
                for spk in speakers:
                    convert_to_results(svc, args, clean_name, wav, tran, spk, opts)
            except AudioReadError as err:
                print(f"error: {err}", file=sys.stderr)
                failed.append(path)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if failed and len(inputs) > 1:
        print(f"error: {len(failed)} of {len(inputs)} inputs failed ({', '.join(failed)}); "
              f"{len(inputs) - len(failed)} converted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
