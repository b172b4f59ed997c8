"""Export a model folder for MoeVoiceStudio. So-VITS (default): `checkpoints/<name>/model.pth` + `config.json`
-> `<name>/<name>_SoVits.onnx` (linked as `<name>/model.onnx`) and the descriptor `<name>.json`. Shallow
diffusion (`--diffusion`): `checkpoints/<name>/diffusion/model.pt` + `config.yaml` -> `<name>/<name>_encoder.onnx`,
`_denoise.onnx`, `_pred.onnx` and `_after.onnx`."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--model_name", type=str, default="TransformerFlow",
                        help="model folder name under checkpoints/ (holding model.pth and config.json)")
    parser.add_argument("--checkpoints_dir", type=str, default="checkpoints",
                        help="folder that holds the model folders and receives <name>.json")
    parser.add_argument("--diffusion", action="store_true",
                        help="export the shallow-diffusion model in <name>/diffusion/ (model.pt, config.yaml) instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from core.checkpoint import CheckpointError
    from core.config import ConfigError
    from export.diffusion_onnx import export_diffusion_folder
    from export.onnx import export_folder

    try:
        if args.diffusion:
            diffusion = export_diffusion_folder(args.model_name, args.checkpoints_dir)
        else:
            result = export_folder(args.model_name, args.checkpoints_dir)
    except (OSError, ConfigError, CheckpointError, ValueError) as err:  # OSError: missing files, full disk
        print(f"onnx_export.py: {err}", file=sys.stderr)
        return 1
    if args.diffusion:
        speakers = f"spk_mix over {diffusion.n_speakers} speakers" if diffusion.n_speakers > 1 else "one speaker"
        for path in diffusion.paths.values():
            print(f"wrote {path}")
        print(f"shallow diffusion exported ({speakers})")
        return 0
    speaker = "per-frame speaker mix (sid [T, n_speakers])" if result.speaker_mix else "speaker id (sid [1])"
    print(f"wrote {result.onnx_path} ({speaker}{', vol input' if result.vol_embedding else ''})")
    print(f"linked {result.legacy_path}")
    print(f"wrote {result.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
