"""Tutorial step 6a (optional): per-speaker k-means of the content units -> logs/44k/kmeans_10000.pt.

    python cluster/train_cluster.py [--dataset ./dataset/44k] [--output logs/44k] [--gpu]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cluster/train_cluster.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("./dataset/44k"),
                        help="path of training data directory (one sub-folder per speaker)")
    parser.add_argument("--output", type=Path, default=Path("logs/44k"), help="path of model output directory")
    parser.add_argument("--gpu", action="store_true",
                        help="use our PyTorch k-means (on CUDA when available) instead of scikit-learn")
    # The file keeps the name kmeans_10000.pt whatever the count: that is where inference looks.
    parser.add_argument("--n_clusters", type=int, default=10000, help="clusters per speaker (default 10000)")
    parser.add_argument("--minibatch", action="store_true",
                        help="CPU: MiniBatchKMeans(batch_size=4096, max_iter=80) instead of full KMeans (faster)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: unseeded, as 4.1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run train_cluster.py with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_clusters < 1:
        parser.error(f"--n_clusters must be >= 1, got {args.n_clusters}")
    import torch
    import tqdm

    from cluster import UnitFileError
    from cluster.kmeans import TooFewFramesError, train_cluster
    from core.atomic import DiskFullError
    from core.features import DatasetError

    if args.gpu and not torch.cuda.is_available():
        print("train_cluster.py: no CUDA device; running the PyTorch k-means on the CPU", file=sys.stderr)
    try:
        path = train_cluster(args.dataset, args.output, n_clusters=args.n_clusters, use_gpu=args.gpu,
                             minibatch=args.minibatch, seed=args.seed, progress=tqdm.tqdm)
    except (DatasetError, UnitFileError, TooFewFramesError, DiskFullError) as err:
        print(f"train_cluster.py: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
