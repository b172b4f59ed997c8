"""Offline end-to-end demo: the whole tutorial on the bundled voices, on CPU, in a few minutes.

    python demo.py [--data ../shared/data] [--workdir demo_run] [--steps 60]

It lays out a fresh project folder (``demo_run/`` by default) the way the tutorial does and runs the
real scripts in it, one after the other, exactly as a user types them:

1. ``resample.py``                 dataset_raw/<speaker>/*.wav -> dataset/44k/
2. ``preprocess_flist_config.py``  file lists + configs/config.json (``--tiny``)
3. ``preprocess_hubert_f0.py``     units, F0 (fcpe, offline weights), spectrograms
4. ``train.py -c configs/config.json -m 44k``   a small model on the CPU
5. ``inference_main.py``           converts a song from raw/ into results/

When the toolkit's own ``pretrain/checkpoint_best_legacy_500.pt`` (ContentVec) is present it is used.
Otherwise — no ContentVec ships with the toolkit, it is a 200 MB download — the demo announces it and
writes a deterministic stand-in: a small random-weight encoder in the real fairseq file format. The
model is trained for only a few dozen steps either way: the result shows every stage working end to
end, not a finished voice. With the real ``pretrain/`` files and a longer training the same commands
are the tutorial's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SPEAKERS = ("slt", "kal")
CLIPS_PER_SPEAKER = 8
SOURCE = "ked_src01.wav"

# A small model so that CPU training gets somewhere in a couple of minutes (4.1 config keys).
DEMO_MODEL = {"inter_channels": 64, "hidden_channels": 64, "filter_channels": 128, "n_heads": 2,
              "n_layers": 3, "upsample_initial_channel": 128, "gin_channels": 64}
ENCODER_DIM = 64


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


def run(step: str, args: list[str], cwd: Path) -> None:
    print(f"\n=== {step}: python {' '.join(args)}", flush=True)
    started = time.monotonic()
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=cwd, env=env)
    if done.returncode != 0:
        raise SystemExit(f"demo stopped: {args[0]} exited with status {done.returncode}")
    print(f"=== {step} done in {time.monotonic() - started:.1f} s", flush=True)


def install_encoder(work: Path) -> int:
    """Real ContentVec from the toolkit's pretrain/ when there, else the announced stand-in; returns its width."""
    target = work / "pretrain" / "checkpoint_best_legacy_500.pt"
    real = ROOT / "pretrain" / "checkpoint_best_legacy_500.pt"
    if real.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real, target)
        print(f"Using the ContentVec weights in {real}.")
        return 768
    print("NOTE: pretrain/checkpoint_best_legacy_500.pt (ContentVec, the vec768l12 speech encoder) is not\n"
          "      installed, so this demo uses a deterministic stand-in encoder with random weights: the\n"
          "      pipeline runs end to end, but the converted voice is not meaningful. For real conversions\n"
          "      put the ContentVec checkpoint (checkpoint_best_legacy_500.pt) into pretrain/ — see\n"
          "      pretrain/README.md — and train for much longer.")
    write_demo_encoder(target)
    return ENCODER_DIM


def prepare_project(data: Path, work: Path) -> int:
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
    return install_encoder(work)


def shrink_config(config_path: Path, steps: int, ssl_dim: int) -> None:
    """Small model, short schedule: edit the generated config as a user would."""
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    cfg["model"].update(DEMO_MODEL, ssl_dim=ssl_dim)
    batches_per_epoch = max(1, (len(SPEAKERS) * (CLIPS_PER_SPEAKER - 2)) // 4)
    cfg["train"].update(batch_size=4, epochs=max(1, steps // batches_per_epoch), eval_interval=steps,
                        log_interval=10, keep_ckpts=2)
    config_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder with voices/<speaker>/*.wav and source/*.wav")
    parser.add_argument("--workdir", type=Path, default=ROOT / "demo_run", help="project folder to create")
    parser.add_argument("--steps", type=int, default=60, help="training steps (about)")
    args = parser.parse_args(argv)
    work = args.workdir.resolve()
    sys.path.insert(0, str(ROOT))
    ssl_dim = prepare_project(args.data.resolve(), work)
    run("2.4.1 resample", ["resample.py"], work)
    run("2.4.2 file lists and config", ["preprocess_flist_config.py", "--speech_encoder", "vec768l12",
                                        "--tiny", "--seed", "1"], work)
    shrink_config(work / "configs" / "config.json", args.steps, ssl_dim)
    run("2.4.3 features", ["preprocess_hubert_f0.py", "--f0_predictor", "fcpe", "--device", "cpu"], work)
    run("2.5.1 training", ["train.py", "-c", "configs/config.json", "-m", "44k"], work)
    checkpoint = max((work / "logs" / "44k").glob("G_*.pth"), key=lambda p: int(p.stem[2:]))
    run("3.1 conversion", ["inference_main.py", "-m", str(checkpoint.relative_to(work)), "-c",
                           "configs/config.json", "-n", SOURCE, "-t", "0", "-s", *SPEAKERS,
                           "-f0p", "fcpe", "-d", "cpu"], work)
    results = sorted((work / "results").iterdir())
    print("\nDemo finished. Converted audio (one file per speaker):")
    for path in results:
        print(f"  {path}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
