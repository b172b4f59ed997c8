"""Tutorial step 0: cut the long recordings of `dataset_raw/<speaker>/` into 4-15 s pieces at silences.

In place, each recording becomes `<name>_<index>.wav` pieces beside it and the recording itself moves into
`dataset_raw/<speaker>/.unsliced/`; with --out_dir the pieces go there and the recordings stay. Re-running skips
what is done. The slicer options are the audio-slicer's; for singing use --min_interval 100 (or 50).
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from prep.slicing import SliceSettings
    from vencoder import ENCODER_DIMS

    d = SliceSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in_dir", type=str, default="./dataset_raw", help="folder of speaker folders")
    parser.add_argument("--out_dir", type=str, default=None,
                        help="write the pieces into OUT_DIR/<speaker>/ and leave the recordings in place "
                             "(default: slice in place, keeping the recordings in <speaker>/.unsliced/)")
    parser.add_argument("--min_seconds", type=float, default=d.min_seconds,
                        help="a shorter piece is joined with a neighbour it touches")
    parser.add_argument("--max_seconds", type=float, default=d.max_seconds,
                        help="a longer piece is split again at its quietest point")
    parser.add_argument("--speech_encoder", "--encoder", type=str, default=None, choices=ENCODER_DIMS,
                        help="the encoder you will train with: whisper-ppg(-large) allows at most 30 s pieces")
    parser.add_argument("--db_thresh", type=float, default=d.db_thresh,
                        help="RMS below this (dB) is silence; raise it for noisy recordings")
    parser.add_argument("--min_length", type=int, default=d.min_length,
                        help="ms of audio before the slicer may cut at a silence")
    parser.add_argument("--min_interval", type=int, default=d.min_interval,
                        help="ms a silence must last to be cut; 100 or 50 for singing, which has short breaks")
    parser.add_argument("--hop_size", type=int, default=d.hop_size, help="ms between RMS frames")
    parser.add_argument("--max_sil_kept", type=int, default=d.max_sil_kept,
                        help="ms of silence kept at each side of a piece")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run slice_audio.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from prep.slicing import SliceSettings
    from vencoder import WHISPER_MAX_SECONDS

    if not 0 <= args.min_seconds < args.max_seconds:
        parser.error(f"need 0 <= --min_seconds < --max_seconds, got {args.min_seconds:g} and {args.max_seconds:g}")
    whisper = (args.speech_encoder or "").startswith("whisper-ppg")
    if args.max_seconds > WHISPER_MAX_SECONDS:
        if whisper:
            parser.error(f"{args.speech_encoder} reads at most {WHISPER_MAX_SECONDS:g} s per clip: use "
                         f"--max_seconds {WHISPER_MAX_SECONDS:g} or less")
        print(f"slice_audio.py: warning: pieces over {WHISPER_MAX_SECONDS:g} s break the whisper-ppg encoders "
              "(and need much memory in training)", file=sys.stderr)
    settings = SliceSettings(args.min_seconds, args.max_seconds, args.db_thresh, args.min_length,
                             args.min_interval, args.hop_size, args.max_sil_kept)
    try:
        settings.slicer(44100)
    except ValueError as err:
        parser.error(f"slicer options: {err} (--min_length, --min_interval, --hop_size, --max_sil_kept)")

    from core.atomic import DiskFullError
    from prep.slicing import format_report, slice_dataset

    try:
        reports = slice_dataset(args.in_dir, args.out_dir, settings)
    except (FileNotFoundError, ValueError, DiskFullError) as err:
        print(f"slice_audio.py: {err}", file=sys.stderr)
        return 1
    print(format_report(reports, settings))
    return 1 if any(f.status == "failed" for r in reports for f in r.files) else 0


if __name__ == "__main__":
    sys.exit(main())
