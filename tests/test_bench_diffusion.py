"""Smoke run of bench/diffusion.py on tiny networks: every sampler row with its network-call count, the
end-to-end stages and their figures, output shapes, and the default sizes read from the template."""
from __future__ import annotations

import pytest
import torch

from bench import diffusion as bench_diffusion


def test_main_smoke() -> None:
    report = bench_diffusion.main(["--tiny", "--seconds", "0.3", "--repeats", "1", "--threads", "1",
                                   "--ddpm_steps", "4"])
    frames = int(0.3 * 44100) // 512
    assert report.frames == frames and report.audio_seconds == pytest.approx(frames * 512 / 44100)
    names = [r.name for r in report.samplers]
    assert names == ["WaveNet call alone", "ddpm (plain loop)", *bench_diffusion.METHODS]
    # network calls per run: k_step 100 / speedup 10 is 10 solver steps; pndm's first step costs two
    calls = {r.name: r.calls for r in report.samplers}
    assert calls == {"WaveNet call alone": 1, "ddpm (plain loop)": 4, "ddim": 10, "pndm": 11, "dpm-solver": 10,
                     "dpm-solver++": 10, "unipc": 10}
    assert [r.setting for r in report.samplers[1:3]] == ["4 / 1", "100 / 10"]
    assert all(r.seconds > 0 and r.cpu_seconds > 0 for r in report.samplers + report.stages)
    assert all(r.audio_seconds == report.audio_seconds for r in report.samplers + report.stages)
    assert len(report.stages) == 4 and report.stages[-1].name == "total"
    assert report.stages[-1].seconds == pytest.approx(sum(r.seconds for r in report.stages[:3]))
    assert report.stages[-1].cpu_seconds == pytest.approx(sum(r.cpu_seconds for r in report.stages[:3]))
    assert report.mel is not None and report.mel.shape == (1, frames, 128)
    assert bool(torch.isfinite(report.mel).all()) and float(report.mel.std()) > 0
    assert report.audio is not None and report.audio.shape == (1, 1, frames * 512)
    # A conversion with a sampler: input mel + that sampler + vocoder, over the audio length.
    fixed = report.stages[0].seconds + report.stages[2].seconds
    ddim = next(r for r in report.samplers if r.name == "ddim")
    rtf = bench_diffusion.end_to_end_rtf(ddim, report.stages)
    assert rtf == pytest.approx((ddim.seconds + fixed) / report.audio_seconds) and rtf > ddim.seconds / ddim.audio_seconds


def test_sampler_subset_and_flags() -> None:
    report = bench_diffusion.main(["--tiny", "--seconds", "0.2", "--repeats", "1", "--samplers", "unipc",
                                   "--method", "unipc", "--k_step", "20", "--ddpm_steps", "2"])
    assert [(r.name, r.calls) for r in report.samplers] == [("WaveNet call alone", 1), ("ddpm (plain loop)", 2),
                                                            ("unipc", 2)]
    assert "unipc k_step 20" in report.stages[1].name
    for bad in (["--samplers", "naive"], ["--k_step", "0"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            bench_diffusion.parse_args(bad)


def test_default_sizes_come_from_the_template() -> None:
    sizes = bench_diffusion.model_sizes(tiny=False)
    assert sizes == {"input_channel": 768, "n_spk": 1, "use_pitch_aug": True, "out_dims": 128, "n_layers": 20,
                     "n_chans": 512, "n_hidden": 256, "timesteps": 1000, "k_step_max": 0}
    assert bench_diffusion.model_sizes(tiny=True)["n_chans"] == 16
