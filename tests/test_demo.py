"""The README's main job: demo.py runs the whole tutorial offline and writes converted audio."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import DATA, ROOT


def test_demo_runs_every_tutorial_step(tmp_path) -> None:
    if not (DATA / "voices" / "slt").exists():
        pytest.skip("../shared/data not available")
    work = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--steps", "3", "--workdir", str(work)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in ("2.4.1 resample", "2.4.2 file lists", "2.4.3 features", "2.5.1 training", "3.1 conversion"):
        assert f"=== {step}" in done.stdout
    assert list((work / "logs" / "44k").glob("G_*.pth"))
    results = list((work / "results").glob("*.flac"))
    assert sorted(r.name for r in results) == ["ked_src01.wav_0key_kal_sovits_fcpe.flac",
                                              "ked_src01.wav_0key_slt_sovits_fcpe.flac"]
    assert "stand-in encoder" in done.stdout
    info = sf.info(results[0])
    source = sf.info(DATA / "source" / "ked_src01.wav")
    assert info.samplerate == 44100 and abs(info.frames - source.frames) <= 1
    audio, _ = sf.read(results[0])
    assert audio.std() > 1e-4  # not silence
