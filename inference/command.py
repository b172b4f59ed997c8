"""The conversion command shared by inference_main.py and the web page: its options and defaults, the checks
on them, 4.1's result names, the conversion of one input into results/, and the errors that end a run with
their message. Cheap to import: torch loads only once a conversion starts.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import soundfile as sf

from modules.F0Predictor import F0_PREDICTORS

if TYPE_CHECKING:
    from inference.infer_tool import InferOptions, Svc

__all__ = ["build_parser", "check_args", "convert_to_results", "default_cluster_path", "defaults", "result_name",
           "user_errors"]

log = logging.getLogger(__name__)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """inference_main.py's command line: every conversion option with its 4.1 default."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("-m", "--model_path", default="logs/44k/G_37600.pth", help="So-VITS checkpoint (full or compressed)")
    add("-c", "--config_path", default="logs/44k/config.json", help="config.json of the model")
    # 4 and 53 are inference.options.MIN_CLIP_FRAMES / MAX_TRANSPOSE (a test keeps them equal), not imported:
    # that would load torch just to print --help.
    add("-cl", "--clip", type=float, default=0, help="forced slice length in seconds; 0 = slice at silences only; "
        "else at least 4 model frames (4 x hop / sampling rate, 0.046 s at 44.1 kHz)")
    add("-n", "--clean_names", nargs="+", default=["君の知らない物語-src.wav"],
        help="input file names inside raw/ (.wav added when there is no extension)")
    add("-t", "--trans", type=int, nargs="+", default=[0],
        help="transposition in semitones (-53..53), one per input")
    add("-s", "--spk_list", nargs="+", default=["buyizi"], help="target speaker names (config spk)")
    add("-a", "--auto_predict_f0", action="store_true", help="predict F0 with the model (speech only; ignores -t)")
    add("-cm", "--cluster_model_path", default="",
        help="k-means model or feature index; empty = logs/44k/kmeans_10000.pt (feature_and_index.pkl with -fr)")
    add("-cr", "--cluster_infer_ratio", type=float, default=0, help="share of clustering / feature retrieval, 0-1")
    add("-lg", "--linear_gradient", type=float, default=0, help="cross-fade length (s) between forced slices")
    add("-f0p", "--f0_predictor", default="pm", help="F0 predictor: " + ", ".join(F0_PREDICTORS))
    add("-eh", "--enhance", action="store_true", help="NSF-HiFiGAN enhancer pass (needs pretrain/nsf_hifigan/)")
    add("-shd", "--shallow_diffusion", action="store_true", help="add shallow diffusion (-dm/-dc; -eh off)")
    add("-usm", "--use_spk_mix", action="store_true", help="dynamic speaker mix from spkmix.py")
    add("-lea", "--loudness_envelope_adjustment", type=float, default=1, help="1 keeps output loudness, 0 input's")
    add("-fr", "--feature_retrieval", action="store_true", help="use -cm/-cr as feature retrieval, not clustering")
    add("-dm", "--diffusion_model_path", default="logs/44k/diffusion/model_0.pt", help="diffusion model")
    add("-dc", "--diffusion_config_path", default="logs/44k/diffusion/config.yaml", help="diffusion config")
    add("-ks", "--k_step", type=int, default=100, help="shallow-diffusion steps (at most the model's k_step_max)")
    add("-se", "--second_encoding", action="store_true", help="re-encode So-VITS output before -shd")
    add("-od", "--only_diffusion", action="store_true", help="diffusion only: -dc gives speakers, encoder")
    add("-sd", "--slice_db", type=int, default=-40, help="silence threshold of the slicer (dB)")
    add("-d", "--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("-ns", "--noice_scale", type=float, default=0.4, help="noise scale of the prior sampling")
    add("-p", "--pad_seconds", type=float, default=0.5, help="silence padded around each slice, then removed")
    add("-wf", "--wav_format", default="flac", help="output format (flac, wav, ogg, ...)")
    add("-lgr", "--linear_gradient_retain", type=float, default=0.75, help="cross-faded share of -lg (0-1]")
    add("-eak", "--enhancer_adaptive_key", type=int, default=0, help="shift the enhancer's range up (semitones)")
    add("-ft", "--f0_filter_threshold", type=float, default=0.05, help="crepe/rmvpe/fcpe F0 threshold, 0-1")
    add("--onnx", action="store_true", help="run the So-VITS generator with ONNX Runtime (CPU; exported once, "
        "cached next to -m)")
    add("--bf16", action="store_true", help="bf16 autocast for the generator (CUDA, or CPUs with AVX512-BF16/AMX)")
    return p


def result_name(clean_name: str, tran: int, spk: str, args: argparse.Namespace, mode: str) -> str:
    """4.1's output name: {name}_{key}_{spk}{_ratio}_{mode}_{f0p}.{format}."""
    key = "auto" if args.auto_predict_f0 else f"{tran}key"
    cluster = "" if args.cluster_infer_ratio == 0 else f"_{args.cluster_infer_ratio}"
    return f"{clean_name}_{key}_{spk}{cluster}_{mode}_{args.f0_predictor}.{args.wav_format}"


def defaults() -> argparse.Namespace:
    """Every option at its command-line default."""
    return build_parser().parse_args([])


def convert_to_results(svc: Svc, args: argparse.Namespace, clean_name: str, wav: str, tran: int,
                       spk: str | Mapping, opts: InferOptions, progress: Callable[[int, int], None] | None = None
                       ) -> Path:
    """Convert `wav` (input `clean_name`) for `spk` (a name, or a validated mix map with -usm) into
    results/ under 4.1's name; returns the file written."""
    out = Path("results") / result_name(clean_name, tran, "spk_mix" if args.use_spk_mix else spk, args,
                                        svc.output_mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s -> %s", wav, out)
    svc.convert_file(wav, out, spk, opts, args.wav_format, progress)
    log.info("saved %s", out)
    return out


def default_cluster_path(feature_retrieval: bool = False) -> str:
    """4.1's file for -cr when -cm is empty: the feature index with -fr, else the k-means model."""
    return "logs/44k/feature_and_index.pkl" if feature_retrieval else "logs/44k/kmeans_10000.pt"


def check_args(args: argparse.Namespace) -> str | None:
    if args.device not in (None, "auto"):
        from core.device import device_problem  # loads torch: only for a device named on the command line

        if problem := device_problem(args.device):
            return problem
    if args.f0_predictor not in F0_PREDICTORS:
        return f"unknown F0 predictor {args.f0_predictor!r}; choose one of {', '.join(F0_PREDICTORS)}"
    if args.wav_format.upper() not in sf.available_formats():
        return f"unknown output format {args.wav_format!r}; e.g. flac, wav, ogg"
    if not 0 <= args.cluster_infer_ratio <= 1:
        return f"-cr must be between 0 and 1, got {args.cluster_infer_ratio}"
    return None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a run with their message (exit status 1; a message on the web page), no traceback."""
    from core.checkpoint import CheckpointError  # covers ModelConfigMismatch
    from core.config import ConfigError
    from core.atomic import DiskFullError
    from inference.infer_tool import SvcError
    from inference.speaker_mix import SpkMixError
    from modules.audio_io import AudioReadError
    from vdecoder.nsf_hifigan.models import VocoderLoadError

    return (SvcError, SpkMixError, ConfigError, CheckpointError, VocoderLoadError, AudioReadError,
            DiskFullError, FileNotFoundError, NotImplementedError)
