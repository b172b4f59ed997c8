"""train_diff.py on CPU: a tiny Unit2Mel trained on generated clips with real `--use_diff` feature files.

The project is built in a temporary folder: harmonic tones as 44.1 kHz 16-bit WAVs, their mels and
key-shifted mels made by the tiny NSF-HiFiGAN fixture (`Vocoder.extract`, as preprocessing does),
volumes, F0 and random 16-channel units, plus file lists and a diffusion.yaml derived from the
fixture config (2 layers, 16 channels, 32 hidden, 2 speakers).
"""
from __future__ import annotations

import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

import train_diff
from conftest import FIXTURES
from diffusion.data_loaders import AudioDataset, DatasetError, get_data_loaders
from diffusion.saver import Saver, find_resume_checkpoint, load_model, retention_victims
from diffusion.solver import DiffusionTrainer, check_config, learning_rate_at, select_amp_dtype, select_device
from diffusion.unit2mel import Unit2Mel
from diffusion.vocoder import Vocoder
from modules.audio_io import write_wav_int16
from core.checkpoint import safe_torch_load
from core.config import ConfigError, load_config
from modules.mel_processing import volume_extract
from core.features import load_npy, save_f0, save_npy, save_object_npy

pytestmark = pytest.mark.usefixtures("single_thread")

SR, HOP, UNITS = 44100, 512, 16
DIFF = FIXTURES / "diffusion"
VOCODER_DIR = FIXTURES / "nsf_hifigan" / "model_dir"
# (speaker, name, seconds, f0 Hz): four training clips, one too short for a 0.5 s crop, one for validation.
TRAIN = [("spk_a", "a1", 1.0, 180.0), ("spk_a", "a2", 0.9, 220.0), ("spk_b", "b1", 1.0, 260.0),
         ("spk_b", "b2", 0.9, 300.0), ("spk_a", "short", 0.4, 200.0)]
VALID = [("spk_b", "v1", 0.7, 240.0)]


def _write_clip(wav, seconds: float, f0_hz: float, vocoder: Vocoder, rng: np.random.Generator) -> None:
    """A clip and every file `preprocess_hubert_f0.py --use_diff` writes next to it."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    freq = f0_hz * (1 + 0.2 * t / seconds)
    phase = 2 * np.pi * np.cumsum(freq) / SR
    audio = sum(0.25 / k * np.sin(k * phase) for k in range(1, 7)) * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t))
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    write_wav_int16(wav, pcm, SR)
    x = torch.from_numpy(pcm.astype(np.float32) / 32768).unsqueeze(0)
    frames = n // HOP
    n16 = math.ceil(n * 16000 / SR)
    torch.save(torch.from_numpy(rng.normal(0, 1, (1, UNITS, (n16 - 400) // 320 + 1)).astype(np.float32)),
               f"{wav}.soft.pt")
    save_f0(f"{wav}.f0.npy", f0_hz * (1 + 0.2 * np.arange(frames) / frames), np.ones(frames))
    save_npy(f"{wav}.vol.npy", volume_extract(x, HOP).numpy())
    with torch.no_grad():
        save_npy(f"{wav}.mel.npy", vocoder.extract(x, SR)[0].numpy())
        keyshift, scale = float(rng.uniform(-5, 5)), float(10 ** rng.uniform(-1, 0))
        aug_mel = vocoder.extract(x * scale, SR, keyshift=keyshift)[0].numpy()
        save_object_npy(f"{wav}.aug_mel.npy", [aug_mel, keyshift])
    save_npy(f"{wav}.aug_vol.npy", volume_extract(x * scale, HOP).numpy())


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    if not (VOCODER_DIR / "model").exists() or not (DIFF / "diffusion.yaml").exists():
        pytest.skip("nsf_hifigan / diffusion fixtures not available")
    root = tmp_path_factory.mktemp("diffproj")
    (root / "pretrain" / "nsf_hifigan").mkdir(parents=True)
    for name in ("model", "config.json"):
        shutil.copy(VOCODER_DIR / name, root / "pretrain" / "nsf_hifigan" / name)
    vocoder = Vocoder("nsf-hifigan", str(root / "pretrain" / "nsf_hifigan" / "model"), device="cpu")
    rng = np.random.default_rng(7)
    lists = {}
    for list_name, clips in (("train", TRAIN), ("val", VALID)):
        lines = []
        for spk, name, seconds, f0 in clips:
            (root / "dataset" / "44k" / spk).mkdir(parents=True, exist_ok=True)
            _write_clip(root / "dataset" / "44k" / spk / f"{name}.wav", seconds, f0, vocoder, rng)
            lines.append(f"./dataset/44k/{spk}/{name}.wav")
        lists[list_name] = lines
    (root / "filelists").mkdir()
    for list_name, lines in lists.items():
        (root / "filelists" / f"{list_name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def project(base_project, tmp_path, monkeypatch):
    """A private copy of the prepared project, as the current directory."""
    root = tmp_path / "proj"
    shutil.copytree(base_project, root)
    monkeypatch.chdir(root)
    return root


def _config(root, name: str = "diffusion", model: dict | None = None, **train) -> str:
    """configs/<name>.yaml: the fixture's tiny config adapted to the generated project."""
    cfg = yaml.safe_load((DIFF / "diffusion.yaml").read_text())
    cfg["data"].update(encoder_out_channels=UNITS, duration=0.5)
    cfg["vocoder"]["ckpt"] = "pretrain/nsf_hifigan/model"
    cfg["infer"]["speedup"] = 50
    cfg["model"].update(model or {})
    cfg["train"].update(dict(num_workers=0, interval_log=1, interval_val=2, interval_force_save=4, epochs=3,
                             lr=0.002, cache_fp16=False))
    cfg["train"].update(train)
    (root / "configs").mkdir(exist_ok=True)
    path = root / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return f"configs/{name}.yaml"


def _models(expdir) -> set[str]:
    return {p.name for p in expdir.iterdir() if re.match(r"^model_\d+\.pt$", p.name)}


def _steps_logged(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"\| step: (\d+)", text)]


def _dataset(root, cached: bool, **options) -> AudioDataset:
    return AudioDataset("filelists/train.txt", waveform_sec=options.pop("waveform_sec", 0.5), hop_size=HOP,
                        sample_rate=SR, spk={"spk_a": 0, "spk_b": 1}, n_spk=2, load_all_data=cached,
                        n_units=UNITS, n_mels=128, **options)


# ------------------------------------------------------------------------------------------------
def test_fresh_run_then_resume_with_the_same_command(project, capsys) -> None:
    cfg = _config(project, interval_val=3, interval_force_save=6)
    expdir = project / "logs" / "44k" / "diffusion"
    assert train_diff.main(["-c", cfg]) == 0
    # 2 batches per epoch (4 usable clips, batch 2) x 3 epochs; saves at 3 and 6, 3 dropped at 6.
    assert _models(expdir) == {"model_6.pt"}
    ckpt = safe_torch_load(expdir / "model_6.pt")
    assert set(ckpt) == {"global_step", "model", "resume"} and ckpt["global_step"] == 6
    assert {k: ckpt["resume"][k] for k in ("epoch", "batch")} == {"epoch": 2, "batch": 2}
    reference = safe_torch_load(DIFF / "model_2000.pt")
    assert list(ckpt["model"]) == list(reference["model"])  # the 4.1 state-dict layout
    assert ckpt["model"]["unit_embed.weight"].shape == (32, UNITS)
    saved_cfg = (expdir / "config.yaml").read_text()
    assert saved_cfg == yaml.safe_dump(yaml.safe_load((project / cfg).read_text()), sort_keys=True)
    log = (expdir / "log_info.txt").read_text(encoding="utf-8")
    assert _steps_logged(log) == [1, 2, 3, 4, 5, 6]
    assert "1 of 5 clips in filelists/train.txt are shorter than data.duration + 0.1 = 0.6 s" in log
    assert " > Now model timesteps is 1000, and k_step_max is 1000" in log
    assert " [*] model checkpoint deleted: logs/44k/diffusion/model_3.pt" in log
    assert log.count(" --- <validation> --- ") == 2
    out = capsys.readouterr().out
    assert "======= start training =======" in out and "| step: 6" in out

    assert train_diff.main(["-c", cfg]) == 0  # the same command again: all 3 epochs are done
    log = (expdir / "log_info.txt").read_text(encoding="utf-8")
    assert " [*] all 3 epochs (train.epochs) are done; raise it to train on" in log
    assert _steps_logged(log) == [1, 2, 3, 4, 5, 6] and _models(expdir) == {"model_6.pt"}
    cfg = _config(project, interval_val=3, interval_force_save=6, epochs=6)
    assert train_diff.main(["-c", cfg]) == 0  # resumes from model_6.pt and runs epochs 3 to 5
    log = (expdir / "log_info.txt").read_text(encoding="utf-8")
    assert " [*] restoring model from logs/44k/diffusion/model_6.pt" in log
    assert _steps_logged(log) == list(range(1, 13))
    assert _models(expdir) == {"model_6.pt", "model_12.pt"}  # 6 is a force save, 9 dropped at 12
    resumed = safe_torch_load(expdir / "model_12.pt")
    assert resumed["global_step"] == 12
    assert not torch.equal(resumed["model"]["unit_embed.weight"], ckpt["model"]["unit_embed.weight"])


def test_tensorboard_has_train_and_validation_entries(project) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train_diff.main(["-c", _config(project, epochs=1)]) == 0
    events = EventAccumulator(str(project / "logs" / "44k" / "diffusion" / "logs"),
                              size_guidance={"images": 0, "audio": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "validation/loss"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert "spk_b_v1.wav" in tags["images"]
    assert {"spk_b_v1_gt.wav", "spk_b_v1_pred.wav"} <= set(tags["audio"])
    pred = events.Audio("spk_b_v1_pred.wav")[0]
    assert pred.sample_rate == SR and pred.length_frames == (int(0.7 * SR) // HOP) * HOP


def test_saver_writes_config_yaml_like_4_1(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    saver = Saver(load_config(DIFF / "diffusion.yaml"))
    saver.close()
    assert (tmp_path / "logs/44k/diffusion/config.yaml").read_bytes() == (DIFF / "saver_config.yaml").read_bytes()


def test_loss_goes_down_on_a_fixed_batch(project) -> None:
    """100 optimiser steps on one batch lower the loss at fixed (t, noise); 64 channels because a
    16-channel WaveNet cannot pass the 128-bin noise through and barely learns at all."""
    args = load_config(_config(project, lr=0.003, model=dict(n_chans=64)))
    torch.manual_seed(0)
    trainer = DiffusionTrainer(args, torch.device("cpu"))
    trainer.saver.close()
    batch = next(iter(trainer.loader_train))
    x = trainer._inputs(batch)
    t = torch.tensor([400, 900])
    noise = torch.randn(2, 1, 128, x["mel"].shape[1], generator=torch.Generator().manual_seed(1))

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(trainer.model(x["units"], x["f0"], x["volume"], x["spk_id"], aug_shift=x["aug_shift"],
                                       gt_spec=x["mel"], infer=False, t=t, noise_fn=lambda _: noise))

    before = fixed_loss()
    for step in range(1, 101):
        trainer._set_lr(step)
        assert np.isfinite(trainer.train_step(batch))
    after = fixed_loss()
    assert 0.95 < before < 1.05  # zero-initialised output projection: the prediction starts at ~0
    assert after < 0.95 * before, (before, after)


def test_retention_rule(tmp_path) -> None:
    for step in (0, 2000, 4000, 5000, 6000, 6500, 8000):
        (tmp_path / f"model_{step}.pt").write_bytes(b"")
    (tmp_path / "model_best.pt").write_bytes(b"")

    def names(step: int) -> list[str]:
        return sorted(os.path.basename(p) for p in retention_victims(str(tmp_path), step, 2000, 5000))

    assert names(2000) == []  # model_0.pt is a multiple of anything: kept
    assert names(4000) == ["model_2000.pt"]
    assert names(7000) == ["model_6000.pt", "model_6500.pt"]  # 5000 is a force save; 6500 an extra save
    assert names(8000) == ["model_6000.pt", "model_6500.pt"]
    assert names(10000) == ["model_8000.pt"]


def test_resume_picks_the_highest_step_and_ignores_other_names(tmp_path, caplog) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("model_900.pt", "model_1000.pt", "model_best.pt", "sub/model_5000.pt"):
        torch.save({"global_step": 1, "model": {}}, tmp_path / name)
    path, ckpt = find_resume_checkpoint(str(tmp_path))
    assert path == str(tmp_path / "model_1000.pt") and ckpt == {"global_step": 1, "model": {}}
    (tmp_path / "model_900.pt").unlink()
    (tmp_path / "model_1000.pt").unlink()
    with caplog.at_level("WARNING"):
        assert find_resume_checkpoint(str(tmp_path)) is None
    assert "only model_<step>.pt files in" in caplog.text and "model_best.pt" in caplog.text


def test_finetune_from_model_0_reports_mismatched_keys(project, caplog) -> None:
    expdir = project / "logs" / "44k" / "diffusion"
    expdir.mkdir(parents=True)
    torch.manual_seed(3)
    other = Unit2Mel(UNITS, 3, True, 128, 2, 16, 32, 1000, 0)  # 3 speakers: spk_embed has another shape
    torch.save({"global_step": 0, "model": other.state_dict()}, expdir / "model_0.pt")
    model = Unit2Mel(UNITS, 2, True, 128, 2, 16, 32, 1000, 0)
    optimizer = torch.optim.AdamW(model.parameters())
    with caplog.at_level("WARNING"):
        state = load_model(str(expdir), model, optimizer)
    assert state.global_step == 0 and state.path == str(expdir / "model_0.pt")
    assert state.report.mismatched == [("spk_embed.weight", (3, 32), (2, 32))]
    assert "spk_embed.weight file [3, 32] vs model [2, 32]" in caplog.text
    assert torch.equal(model.unit_embed.weight, other.unit_embed.weight)
    assert not state.optimizer_restored

    assert train_diff.main(["-c", _config(project, epochs=1, interval_val=1)]) == 0
    log = (expdir / "log_info.txt").read_text(encoding="utf-8")
    assert " [*] restoring model from logs/44k/diffusion/model_0.pt" in log
    assert "spk_embed.weight file [3, 32] vs model [2, 32]" in log
    assert _steps_logged(log) == [1, 2]
    assert _models(expdir) == {"model_0.pt", "model_2.pt"}  # model_1 dropped, model_0 kept


def test_resume_restores_step_and_optimizer(project) -> None:
    cfg = _config(project, epochs=1, save_opt=True)
    assert train_diff.main(["-c", cfg]) == 0
    expdir = project / "logs" / "44k" / "diffusion"
    ckpt = safe_torch_load(expdir / "model_2.pt")
    assert set(ckpt) == {"global_step", "model", "optimizer", "resume"}
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == 0.002
    trainer = DiffusionTrainer(load_config(cfg), torch.device("cpu"))
    trainer.saver.close()
    assert trainer.resume.global_step == 2 and trainer.resume.optimizer_restored
    assert int(trainer.optimizer.state_dict()["state"][0]["step"]) == 2


def test_learning_rate_matches_4_1_step_lr() -> None:
    lr, gamma, decay = 0.01, 0.5, 3

    def step_lr_rates(start: int, steps: int) -> list[float]:
        """4.1: lr preset at resume step `start`, StepLR(last_epoch=start-2), stepped after every batch."""
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        for g in opt.param_groups:
            g["initial_lr"] = lr
            g["lr"] = lr * gamma ** max((start - 2) // decay, 0)
        sched = torch.optim.lr_scheduler.StepLR(opt, decay, gamma, last_epoch=start - 2)
        rates = []
        for _ in range(steps):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return rates

    for start in (0, 4, 7):
        ours = [learning_rate_at(start + i, lr, gamma, decay) for i in range(1, 12)]
        assert ours == pytest.approx(step_lr_rates(start, 11), rel=1e-12), start


def test_cache_off_uses_aug_mel_for_shifted_items(project) -> None:
    """The key-shifted item must carry the shifted mel, in both cache modes alike."""
    sets = {cached: _dataset(project, cached, use_aug=True) for cached in (True, False)}
    assert len(sets[True]) == 4  # the 0.4 s clip is left out
    shifted = 0
    for index in range(4):
        for attempt in range(6):
            items = {}
            for cached, dataset in sets.items():
                import random

                random.seed(100 * index + attempt)
                items[cached] = dataset[index]
            for key in ("mel", "f0", "volume", "units", "aug_shift"):
                assert torch.allclose(items[True][key].float(), items[False][key].float(), atol=1e-6), key
            item, path = items[False], sets[False].paths[index]
            aug_mel, keyshift = load_npy(path + ".aug_mel.npy")
            if float(item["aug_shift"]) != 0:
                shifted += 1
                assert float(item["aug_shift"]) == pytest.approx(keyshift)
                length = item["mel"].shape[0]
                starts = [s for s in range(len(aug_mel) - length + 1)
                          if np.allclose(aug_mel[s:s + length], item["mel"].numpy())]
                assert starts, "shifted item does not hold a slice of aug_mel"
                f0 = load_npy(path + ".f0.npy")[0][starts[0]:starts[0] + length]
                assert np.allclose(item["f0"][:, 0].numpy(), f0 * 2 ** (keyshift / 12), rtol=1e-5)
    assert shifted >= 4


def test_too_short_clips_error(project) -> None:
    with pytest.raises(DatasetError, match=r"No training clip is longer than data.duration \+ 0.1 = 2.1 s "
                                           r"\(the longest, ./dataset/44k/spk_a/a1.wav, is 1.00 s\); "
                                           r"lower data.duration in diffusion.yaml"):
        _dataset(project, True, waveform_sec=2.0)
    cfg = _config(project, epochs=1)
    text = (project / cfg).read_text().replace("duration: 0.5", "duration: 2")
    (project / cfg).write_text(text)
    assert train_diff.main(["-c", cfg]) == 1
    log = (project / "logs/44k/diffusion/log_info.txt").read_text(encoding="utf-8")
    assert "lower data.duration in diffusion.yaml" in log


def test_missing_feature_files_error(project) -> None:
    os.remove(project / "dataset/44k/spk_b/b1.wav.aug_vol.npy")
    os.remove(project / "dataset/44k/spk_a/a2.wav.mel.npy")
    with pytest.raises(DatasetError) as err:
        _dataset(project, False)
    text = str(err.value)
    assert "2 clips of filelists/train.txt lack diffusion features" in text
    assert "./dataset/44k/spk_b/b1.wav: missing b1.wav.aug_vol.npy" in text
    assert "./dataset/44k/spk_a/a2.wav: missing a2.wav.mel.npy" in text
    assert "python preprocess_hubert_f0.py --use_diff" in text
    assert train_diff.main(["-c", _config(project)]) == 1


def test_damaged_feature_file_error(project) -> None:
    (project / "dataset/44k/spk_a/a1.wav.aug_mel.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match=r"a1\.wav\.aug_mel\.npy is unreadable .*; delete it and run python "
                                           r"preprocess_hubert_f0.py --use_diff"):
        _dataset(project, True)


def test_config_problems_stop_before_training(project, capsys) -> None:
    cfg = _config(project, lr=0, amp_dtype="fp8")
    text = (project / cfg).read_text().replace("method: ", "method: naive  # ")
    (project / cfg).write_text(text)
    assert train_diff.main(["-c", cfg]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}: train.lr must be a positive number, got 0" in err
    assert f"{cfg}: train.amp_dtype must be one of" in err
    assert not (project / "logs").exists()
    (project / cfg).write_text(text.replace("lr: 0\n", "lr: 0.002\n").replace("fp8", "fp32"))
    assert train_diff.main(["-c", cfg]) == 1
    assert f"{cfg}: infer.method must be one of ddim, pndm" in capsys.readouterr().err


def test_nan_loss_stops_without_saving(project) -> None:
    for spk, name, *_ in TRAIN:
        path = project / f"dataset/44k/{spk}/{name}.wav.vol.npy"
        vol = np.load(path)
        vol[:] = np.nan
        save_npy(path, vol)
        save_npy(str(path).replace(".vol.npy", ".aug_vol.npy"), vol)
    assert train_diff.main(["-c", _config(project, interval_val=1)]) == 1
    expdir = project / "logs" / "44k" / "diffusion"
    assert _models(expdir) == set()
    assert re.search(r"nan loss at step 1 \(clips: ", (expdir / "log_info.txt").read_text(encoding="utf-8"))


def test_stop_request_saves_the_current_step(project) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    trainer = DiffusionTrainer(load_config(_config(project, epochs=5, interval_val=100)), torch.device("cpu"),
                               stop_requested=stop)
    assert trainer.fit() == 130
    assert _models(project / "logs" / "44k" / "diffusion") == {"model_3.pt"}


def test_device_and_precision_choices(caplog, monkeypatch) -> None:
    monkeypatch.setattr("core.train_support.bf16_problem", lambda device: None)  # a CPU with native bf16
    with caplog.at_level("WARNING"):
        assert select_amp_dtype("fp16", torch.device("cpu")) is None
        assert select_amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
        assert select_amp_dtype("fp32", torch.device("cpu")) is None
        if not torch.cuda.is_available():
            assert select_device("cuda", 0) == torch.device("cpu")
    assert "fp16 is not used on the CPU" in caplog.text
    assert select_device("cpu") == torch.device("cpu")


def test_a_gpu_index_beyond_the_visible_gpus_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda", 0) == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"^device cuda:1 cannot be used: this process sees 1 CUDA GPU"):
        select_device("cuda", 1)


def test_memory_is_pinned_only_for_a_cuda_run(project, monkeypatch) -> None:
    """Pinned batches feed a GPU; a `device: cpu` run on a machine with CUDA must not start CUDA for them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device, pinned in (("cpu", False), ("cuda", True)):
        cfg = load_config(_config(project))
        cfg.device = device
        train, valid = get_data_loaders(check_config(cfg))
        assert train.pin_memory is pinned and valid.pin_memory is pinned, device


def test_bf16_training_step_on_cpu(project, monkeypatch) -> None:
    monkeypatch.setattr("core.train_support.bf16_problem", lambda device: None)  # a CPU with native bf16
    trainer = DiffusionTrainer(load_config(_config(project, amp_dtype="bf16")), torch.device("cpu"))
    assert trainer.amp_dtype is torch.bfloat16
    trainer.saver.close()
    batch = next(iter(trainer.loader_train))
    assert np.isfinite(trainer.train_step(batch))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_cli_requires_config(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        train_diff.main([])
    assert err.value.code == 2
    assert "-c/--config" in capsys.readouterr().err
