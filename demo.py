"""Offline end-to-end demo: the whole tutorial on bundled voices, on the CPU, in a few minutes.

    python demo.py [--data DIR] [--workdir demo_run] [--steps 60] [--diff-steps 300] [--no-diffusion]

Runs the real scripts in a fresh project folder as a user types them, from resample.py to inference_main.py
(``_sovits_``) and, with the compress_model.py release file, ``-shd`` (``_sovdiff_``). Missing downloads
(ContentVec, NSF-HiFiGAN) get random-weight stand-ins in the real formats. The models are small and trained
briefly: the result shows every stage working, not a finished voice.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent
# Bundled voices: the reference data next to the checkout, or the folder in SOVITS_SHARED.
DEFAULT_DATA = Path(os.environ.get("SOVITS_SHARED") or ROOT.parent / "shared") / "data"
SPEAKERS = ("slt", "kal")
CLIPS_PER_SPEAKER = 8
SOURCE = "ked_src01.wav"

# A small model so that CPU training gets somewhere in a couple of minutes (4.1 config keys).
DEMO_MODEL = {"inter_channels": 64, "hidden_channels": 64, "filter_channels": 128, "n_heads": 2,
              "n_layers": 3, "upsample_initial_channel": 128, "gin_channels": 64}
# Batches of 2 crops of 10 frames, and the discriminator at 1/8 of 4.1's channels (0.8 M values, not 47 M).
DEMO_TRAIN = {"batch_size": 2, "segment_size": 5120, "discriminator_width": 0.125}
ENCODER_DIM = 64

# Stand-in NSF-HiFiGAN: the config.json keys the vocoder reads, with the public 44.1 kHz release's STFT
# settings and a much narrower network.
DEMO_VOCODER = {
    "resblock": "1", "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
    "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4], "upsample_initial_channel": 32,
    "num_mels": 128, "n_fft": 2048, "hop_size": 512, "win_size": 2048, "sampling_rate": 44100, "fmin": 40,
    "fmax": 16000}
# A small diffusion model (diffusion.yaml `model` keys); the template's is 20 x 512 channels.
DEMO_DIFFUSION = {"n_layers": 4, "n_chans": 64, "n_hidden": 64}
DIFF_BATCH = 4
DIFF_DURATION = 1.0  # seconds per training crop; every demo clip is longer than this + 0.1 s
RELEASE = "logs/44k/release.pth"  # tutorial 5.1 output name
SHALLOW_K_STEP = 50  # -ks: the demo model trains all 1000 steps (k_step_max 0), so any k <= 1000 works
ENCODER_NOTE = (
    "NOTE: pretrain/checkpoint_best_legacy_500.pt (ContentVec, the vec768l12 speech encoder) is not\n"
    "      installed, so this demo uses a random-weight stand-in encoder: the pipeline runs end to end, but the\n"
    "      converted voice is not meaningful. For real conversions put that checkpoint into pretrain/ (see\n"
    "      pretrain/README.md) and train much longer.")
VOCODER_NOTE = (
    "NOTE: pretrain/nsf_hifigan/ (model + config.json, the NSF-HiFiGAN vocoder of shallow diffusion) is not\n"
    "      installed, so this demo uses a random-weight stand-in vocoder: the diffusion steps run end to end,\n"
    "      but their audio is noise-like. For real use put the release's files there (see pretrain/README.md).")


def write_demo_encoder(path: Path) -> None:
    """A random-weight ContentVec-style checkpoint in fairseq's layout ({'cfg', 'model'})."""
    import torch

    from vencoder.hubert import HubertConfig, HubertModel

    cfg = {"conv_feature_layers": "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2", "encoder_layers": 2,
           "encoder_embed_dim": ENCODER_DIM, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2,
           "conv_pos": 16, "conv_pos_groups": 4}
    torch.manual_seed(0)
    model = HubertModel(HubertConfig.from_dict(cfg))
    with torch.no_grad():  # the model class leaves weights for a checkpoint to fill: draw them here
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, (param[0].numel()) ** -0.5)
            else:
                param.fill_(1.0 if name.endswith(("weight", "weight_g")) else 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": {"model": cfg}, "model": model.state_dict()}, path)


def write_demo_vocoder(folder: Path) -> None:
    """A random-weight NSF-HiFiGAN in the release layout (`model` {'generator': state dict} + `config.json`)."""
    import torch

    from vdecoder.nsf_hifigan.models import build_generator

    torch.manual_seed(0)
    generator = build_generator(DEMO_VOCODER)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(DEMO_VOCODER, indent=2), encoding="utf-8")
    torch.save({"generator": generator.state_dict()}, folder / "model")


def run(work: Path, step: str, script: str, *args: str) -> None:
    """Run `python <script> <args>` in the project folder `work` as a user would; stop the demo if it fails."""
    print(f"\n=== {step}: python {' '.join((script, *args))}", flush=True)
    started, cpu = time.monotonic(), _children_cpu()
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=work,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    if done.returncode != 0:
        raise SystemExit(f"demo stopped: {script} exited with status {done.returncode}")
    print(f"=== {step} done in {time.monotonic() - started:.1f} s (CPU {_children_cpu() - cpu:.1f} s)", flush=True)


def _children_cpu() -> float:
    """CPU seconds (user + system, all threads) of the finished scripts so far (0 on Windows, which has no count)."""
    times = os.times()
    return times.children_user + times.children_system


def install_pretrained(work: Path, rel: str, files: tuple[str, ...], what: str, note: str,
                       write_stand_in: Callable[[Path], None]) -> bool:
    """Copy the toolkit's `pretrain/<rel>` (its `files`, or the file itself) into the project, or print `note`
    and write the stand-in there; True when the real one was there."""
    real, target = ROOT / "pretrain" / rel, work / "pretrain" / rel
    pairs = [(real / name, target / name) for name in files] or [(real, target)]
    if all(source.is_file() for source, _ in pairs):
        for source, copy in pairs:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy)
        print(f"Using the {what} in {real}.")
        return True
    print(note)
    write_stand_in(target)
    return False


def prepare_project(data: Path, work: Path, diffusion: bool) -> int:
    if work.exists():
        shutil.rmtree(work)
    for speaker in SPEAKERS:
        clips = sorted((data / "voices" / speaker).glob("*.wav"))[:CLIPS_PER_SPEAKER]
        if not clips:
            raise SystemExit(f"no voices found in {data / 'voices' / speaker}; pass --data")
        (work / "dataset_raw" / speaker).mkdir(parents=True)
        for clip in clips:
            shutil.copy(clip, work / "dataset_raw" / speaker / clip.name)
    (work / "raw").mkdir()
    shutil.copy(data / "source" / SOURCE, work / "raw" / SOURCE)
    real_encoder = install_pretrained(work, "checkpoint_best_legacy_500.pt", (), "ContentVec weights",
                                      ENCODER_NOTE, write_demo_encoder)
    if diffusion:
        install_pretrained(work, "nsf_hifigan", ("model", "config.json"), "NSF-HiFiGAN vocoder", VOCODER_NOTE,
                           write_demo_vocoder)
    return 768 if real_encoder else ENCODER_DIM


def shrink_configs(work: Path, steps: int, diff_steps: int | None, ssl_dim: int) -> None:
    """Edit the generated configs as a user would: small models, short schedules; diffusion (unless
    `diff_steps` is None) in whole epochs covering about `diff_steps`, validated and saved once at the end."""
    from core.config import load_config, save_config

    cfg = json.loads((work / "configs" / "config.json").read_text(encoding="utf-8"))
    cfg["model"].update(DEMO_MODEL, ssl_dim=ssl_dim)
    batches_per_epoch = max(1, (len(SPEAKERS) * (CLIPS_PER_SPEAKER - 2)) // DEMO_TRAIN["batch_size"])
    cfg["train"].update(DEMO_TRAIN, epochs=max(1, steps // batches_per_epoch), eval_interval=steps,
                        log_interval=10, keep_ckpts=2)
    (work / "configs" / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    if diff_steps is None:
        return
    cfg = load_config(work / "configs" / "diffusion.yaml").to_dict()
    cfg["model"].update(DEMO_DIFFUSION)
    cfg["data"].update(duration=DIFF_DURATION, encoder_out_channels=ssl_dim)
    train_list = (work / "filelists" / "train.txt").read_text(encoding="utf-8")
    batches_per_epoch = max(1, math.ceil(sum(1 for line in train_list.splitlines() if line.strip()) / DIFF_BATCH))
    epochs = max(1, math.ceil(diff_steps / batches_per_epoch))
    total = epochs * batches_per_epoch
    cfg["device"] = "cpu"
    cfg["train"].update(batch_size=DIFF_BATCH, num_workers=0, epochs=epochs, interval_val=total,
                        interval_log=min(10, total))
    save_config(cfg, work / "configs" / "diffusion.yaml")  # sorted block YAML, as 4.1 writes it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with voices/<speaker>/*.wav and source/*.wav")
    parser.add_argument("--workdir", type=Path, default=ROOT / "demo_run", help="project folder to create")
    parser.add_argument("--steps", type=int, default=60, help="So-VITS training steps (about)")
    parser.add_argument("--diff-steps", type=int, default=300, help="diffusion training steps (about)")
    parser.add_argument("--no-diffusion", action="store_true", help="skip the shallow-diffusion steps")
    args = parser.parse_args(argv)
    diffusion = not args.no_diffusion
    started = time.monotonic()
    work = args.workdir.resolve()
    sys.path.insert(0, str(ROOT))
    ssl_dim = prepare_project(args.data.resolve(), work, diffusion)
    run(work, "2.4.1 resample", "resample.py")
    run(work, "2.4.2 file lists and config", "preprocess_flist_config.py", "--speech_encoder", "vec768l12",
        "--tiny", "--seed", "1")
    shrink_configs(work, args.steps, args.diff_steps if diffusion else None, ssl_dim)
    run(work, "2.4.3 features", "preprocess_hubert_f0.py", "--f0_predictor", "fcpe", "--device", "cpu",
        *(["--use_diff"] if diffusion else []))
    run(work, "2.5.1 training", "train.py", "-c", "configs/config.json", "-m", "44k")
    if diffusion:
        run(work, "2.5.2 diffusion training", "train_diff.py", "-c", "configs/diffusion.yaml")
    from core.checkpoint import latest_checkpoint_path

    checkpoint = os.path.relpath(latest_checkpoint_path(work / "logs" / "44k", "G_*.pth"), work)
    options = ["-c", "configs/config.json", "-n", SOURCE, "-t", "0", "-s", *SPEAKERS, "-f0p", "fcpe", "-d", "cpu"]
    run(work, "3.1 conversion", "inference_main.py", "-m", checkpoint, *options)
    # The inference-only release file (tutorial 5.1) serves the second pass.
    run(work, "5.1 release file", "compress_model.py", "-c", "configs/config.json", "-i", checkpoint,
        "-o", RELEASE)
    if diffusion:
        model = os.path.relpath(latest_checkpoint_path(work / "logs" / "44k" / "diffusion", "model_*.pt"), work)
        run(work, "3.1 shallow diffusion", "inference_main.py", "-m", RELEASE, *options, "-shd", "-dm", model,
            "-dc", "logs/44k/diffusion/config.yaml", "-ks", str(SHALLOW_K_STEP))
    results = sorted((work / "results").iterdir())
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s (CPU {_children_cpu():.0f} s). Converted audio "
          "(one file per speaker and mode):", *(f"  {p}" for p in results), sep="\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
