"""Per-speaker feature indexes for MoeVoiceStudio: `feature_and_index.pkl` (train_index.py) -> one native
faiss file `Index-<speaker id>.index` per speaker.

    python export_index_for_onnx.py -i logs/44k/feature_and_index.pkl -o checkpoints/<name>/

The .pkl is read with the restricted unpickler of `-fr` inference: only faiss indexes are accepted.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=str, default="logs/44k/feature_and_index.pkl",
                        help="feature index file written by train_index.py")
    parser.add_argument("-o", "--output_dir", type=str, required=True,
                        help="folder receiving Index-<speaker id>.index (e.g. checkpoints/<name>/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run export_index_for_onnx.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    args = build_parser().parse_args(argv)
    from cluster.feature_index import load_index_file, save_speaker_indexes
    from core.atomic import DiskFullError
    from core.checkpoint import CheckpointError

    try:
        indexes = load_index_file(args.input)
        paths = save_speaker_indexes(indexes, args.output_dir)
    except (CheckpointError, DiskFullError) as err:
        print(f"export_index_for_onnx.py: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"export_index_for_onnx.py: cannot write into {args.output_dir}: {err.strerror or err}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
