"""Tutorial step 6b (optional): per-speaker faiss feature-retrieval index -> logs/44k/feature_and_index.pkl.

    python train_index.py -c configs/config.json [--root_dir dataset/44k] [--output_dir logs/44k]
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root_dir", type=str, default="dataset/44k", help="path to root dir")
    parser.add_argument("-c", "--config", type=str, default="./configs/config.json",
                        help="JSON file for configuration (its spk map picks the speakers)")
    parser.add_argument("--output_dir", type=str, default="logs/44k", help="path to output dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run train_index.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    args = build_parser().parse_args(argv)
    from cluster import UnitFileError
    from cluster.feature_index import INDEX_FILE_NAME, save_index_file, train_index
    from core.atomic import DiskFullError
    from core.config import ConfigError, load_config
    from core.features import DatasetError

    try:
        spk = load_config(args.config).get("spk")
        if not spk:
            raise ConfigError(f"{args.config} has no spk map (speaker name -> id); "
                              "run preprocess_flist_config.py", args.config, "spk")
        indexes = train_index(args.root_dir, dict(spk))
        os.makedirs(args.output_dir, exist_ok=True)  # 4.1 required it to exist; creating it is harmless
        path = os.path.join(args.output_dir, INDEX_FILE_NAME)
        save_index_file(indexes, path)
    except (ConfigError, DatasetError, UnitFileError, DiskFullError) as err:
        print(f"train_index.py: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
