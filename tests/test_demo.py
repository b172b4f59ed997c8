"""The README's main job: demo.py runs the whole tutorial offline, shallow diffusion included."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import DATA, ROOT

STEPS = ("2.4.1 resample", "2.4.2 file lists", "2.4.3 features", "2.5.1 training", "2.5.2 diffusion training",
         "3.1 conversion", "5.1 release file", "3.1 shallow diffusion")


@pytest.mark.slow
def test_demo_runs_every_tutorial_step(tmp_path) -> None:
    if not (DATA / "voices" / "slt").exists():
        pytest.skip(f"{DATA} not available")
    work = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--steps", "3", "--diff-steps", "3",
                           "--data", str(DATA), "--workdir", str(work)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in STEPS:
        assert f"=== {step}" in done.stdout
    assert "Demo finished in " in done.stdout and " s (CPU " in done.stdout
    assert "python preprocess_hubert_f0.py --f0_predictor fcpe --device cpu --use_diff" in done.stdout
    assert "python train_diff.py -c configs/diffusion.yaml" in done.stdout
    full = max((work / "logs" / "44k").glob("G_*.pth"), key=lambda p: int(p.stem[2:]))
    release = work / "logs" / "44k" / "release.pth"
    assert release.stat().st_size < 0.6 * full.stat().st_size  # enc_q and the optimizer moments are gone
    assert "-m logs/44k/release.pth" in done.stdout and "-shd" in done.stdout
    # 12 training clips in batches of 4: 3 steps are one epoch, saved as model_3.pt at its end.
    assert [p.name for p in (work / "logs" / "44k" / "diffusion").glob("model_*.pt")] == ["model_3.pt"]
    assert "stand-in encoder" in done.stdout and "stand-in vocoder" in done.stdout
    results = sorted((work / "results").glob("*.flac"))
    assert [r.name for r in results] == ["ked_src01.wav_0key_kal_sovdiff_fcpe.flac",
                                         "ked_src01.wav_0key_kal_sovits_fcpe.flac",
                                         "ked_src01.wav_0key_slt_sovdiff_fcpe.flac",
                                         "ked_src01.wav_0key_slt_sovits_fcpe.flac"]
    source = sf.info(DATA / "source" / "ked_src01.wav")
    for result in results:
        info = sf.info(result)
        assert info.samplerate == 44100 and abs(info.frames - source.frames) <= 1, result.name
        audio, _ = sf.read(result)
        assert audio.std() > 1e-4, result.name  # not silence
