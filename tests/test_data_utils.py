"""data_utils.py: the 4.1 training dataset and collate on small synthetic clips written in a tmp folder.

Each clip gets the files preprocess_hubert_f0.py writes (formats.md §2); unit stretching is checked
against the 4.1 reference of `repeat_expand_2d` (vencoder fixtures).
"""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ROOT, VENCODER_FIXTURES
from core.features import DatasetError, spec_path
from data_utils import TextAudioCollate, TextAudioSpeakerLoader
from core.config import HParams
from modules.mel_processing import spectrogram_torch
from core.features import save_f0, save_npy

HOP = 512


def _config(tmp_path, ssl_dim: int, spk: dict[str, int], vol: bool = False, mode: str = "nearest") -> HParams:
    data = json.loads((ROOT / "configs_template" / "config_tiny_template.json").read_text())
    data["model"].update(ssl_dim=ssl_dim, vol_embedding=vol, n_speakers=max(len(spk), 1))
    data["train"]["vol_aug"] = vol
    data["data"].update(training_files=str(tmp_path / "train.txt"), unit_interpolate_mode=mode)
    data["spk"] = spk
    return HParams(data, source="config.json")


def _clip(tmp_path, speaker: str, name: str, frames: int, units: np.ndarray | None = None, ssl_dim: int = 4,
          volume: bool = False, subtype: str = "PCM_16", rate: int = 44100, seed: int = 0) -> str:
    """Write X.wav and its features; F0 values are unique per frame so crops can be located."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "dataset" / "44k" / speaker
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    n = frames * HOP + 200  # a partial last frame, as real clips have
    t = np.arange(n) / 44100
    wave = (0.4 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    pcm = np.trunc(wave * 32767).astype(np.int16)
    if subtype == "PCM_16":
        sf.write(path, pcm, rate, subtype="PCM_16")
    else:
        sf.write(path, wave, rate, subtype=subtype)
    audio = torch.from_numpy(pcm.astype(np.float32) / 32768).unsqueeze(0)
    spec = spectrogram_torch(audio, 2048, 44100, HOP, 2048)[0]
    torch.save(spec, spec_path(str(path)))
    f0 = 200 + np.arange(frames, dtype=np.float64)
    uv = (np.arange(frames) % 7 != 0).astype(np.float64)
    save_f0(f"{path}.f0.npy", f0, uv)
    if units is None:
        units = rng.standard_normal((ssl_dim, int(frames * 512 / 44100 * 50))).astype(np.float32)
    torch.save(torch.from_numpy(units).unsqueeze(0), f"{path}.soft.pt")
    if volume:
        save_npy(f"{path}.vol.npy", np.abs(wave[: frames * HOP]).reshape(frames, HOP).mean(1).astype(np.float32))
    return str(path)


def _list(tmp_path, paths: list[str]) -> str:
    target = tmp_path / "train.txt"
    target.write_text("".join(p + "\n" for p in paths), encoding="utf-8")
    return str(target)


@pytest.fixture(scope="module")
def stretch_ref() -> dict[str, np.ndarray]:
    path = VENCODER_FIXTURES / "repeat_expand_2d_ref.npz"
    if not path.exists():
        pytest.skip("repeat_expand_2d fixture not available")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_item_matches_41_loading(tmp_path, stretch_ref, mode) -> None:
    units = stretch_ref["case1_content"]  # [4, 75] stretched to 207 frames
    path = _clip(tmp_path, "a", "x.wav", 207, units=units)
    hps = _config(tmp_path, 4, {"a": 0}, mode=mode)
    ds = TextAudioSpeakerLoader(_list(tmp_path, [path]), hps)
    c, f0, spec, audio, spk, uv, volume = ds[0]
    np.testing.assert_array_equal(c.numpy(), stretch_ref[f"case1_{mode}"])
    assert spec.shape == (1025, 207) and audio.shape == (1, 207 * HOP)
    pcm, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(audio[0].numpy(), pcm[: 207 * HOP].astype(np.float32) / 32768)
    assert torch.equal(spec, torch.load(spec_path(path)))
    assert f0[0] == 200 and f0[-1] == 406 and uv[0] == 0 and uv[1] == 1
    assert spk.tolist() == [0] and volume is None


def test_collate_sorts_pads_and_drops_failed_items(tmp_path) -> None:
    a = _clip(tmp_path, "a", "short.wav", 60, volume=True, seed=1)
    b = _clip(tmp_path, "b", "long.wav", 90, volume=True, seed=2)
    hps = _config(tmp_path, 4, {"a": 0, "b": 1}, vol=True)
    ds = TextAudioSpeakerLoader(_list(tmp_path, [a, b]), hps, vol_aug=False)
    items = {int(it[4]): it for it in (ds[0], ds[1])}
    c, f0, spec, wav, spk, lengths, uv, vol = TextAudioCollate()([items[0], None, items[1]])
    assert lengths.tolist() == [90, 60] and spk.tolist() == [[1], [0]]
    assert c.shape == (2, 4, 90) and spec.shape == (2, 1025, 90) and wav.shape == (2, 1, 90 * HOP)
    assert torch.equal(c[1, :, :60], items[0][0]) and not c[1, :, 60:].any() and not wav[1, :, 60 * HOP:].any()
    assert torch.equal(vol[0], items[1][6]) and not vol[1, 60:].any() and torch.equal(uv[1, :60], items[0][5])
    assert TextAudioCollate()([None, None]) is None
    # One item without volume makes the whole batch's volume None (4.1).
    no_vol = items[0][:6] + (None,)
    assert TextAudioCollate()([items[1], no_vol])[7] is None


def test_order_is_41_shuffle_without_touching_global_rng(tmp_path) -> None:
    paths = [_clip(tmp_path, "a", f"{i}.wav", 30, seed=i) for i in range(6)]
    state = random.getstate()
    ds = TextAudioSpeakerLoader(_list(tmp_path, paths), _config(tmp_path, 4, {"a": 0}))
    assert random.getstate() == state
    expected = list(paths)
    random.seed(1234)
    random.shuffle(expected)
    assert ds.audiopaths == expected


def test_long_clip_cropped_to_790_consistent_window(tmp_path) -> None:
    path = _clip(tmp_path, "a", "long.wav", 850, volume=True)
    ds = TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}, vol=True), vol_aug=False)
    full = ds.get_audio(path)
    starts = set()
    for seed in range(6):
        random.seed(seed)
        c, f0, spec, audio, _, uv, volume = ds[0]
        start = int(f0[0]) - 200
        starts.add(start)
        assert 0 <= start <= 850 - 800 and f0.shape == uv.shape == volume.shape == (790,)
        assert c.shape == (4, 790) and spec.shape == (1025, 790) and audio.shape == (1, 790 * HOP)
        assert torch.equal(spec, full[2][:, start:start + 790]) and torch.equal(c, full[0][:, start:start + 790])
        assert torch.equal(audio, full[3][:, start * HOP:(start + 790) * HOP])
        assert torch.equal(volume, full[6][start:start + 790])
    assert len(starts) > 1


def test_volume_augmentation_scales_audio_volume_and_spectrogram(tmp_path) -> None:
    path = _clip(tmp_path, "a", "x.wav", 80, volume=True)
    ds = TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}, vol=True))
    c0, _, spec0, audio0, _, _, vol0 = ds.get_audio(path)
    peak = float(audio0.abs().max()) + 1e-5
    scaled = 0
    for seed in range(8):
        random.seed(seed)
        c, _, spec, audio, _, _, vol = ds[0]
        ratio = float(audio[0, 1000] / audio0[0, 1000])
        assert -1 - 1e-5 <= np.log10(ratio) <= min(1.0, np.log10(1 / peak)) + 1e-5
        torch.testing.assert_close(audio, audio0 * ratio)
        torch.testing.assert_close(vol, vol0 * ratio)
        assert torch.equal(c, c0)
        if abs(ratio - 1) > 1e-6:
            scaled += 1
            # Recomputed from the cropped, scaled audio (4.1); the cached file came from the whole clip.
            torch.testing.assert_close(spec, spectrogram_torch(audio, 2048, 44100, HOP, 2048)[0])
        else:
            assert torch.equal(spec, spec0)
    assert 0 < scaled < 8  # a coin flip per item
    eval_set = TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}, vol=True),
                                      vol_aug=False)
    assert torch.equal(eval_set[0][3], audio0)


def test_bad_items_reported_by_path_and_skipped(tmp_path, caplog) -> None:
    good = _clip(tmp_path, "a", "good.wav", 50, seed=1)
    no_f0 = _clip(tmp_path, "a", "no_f0.wav", 50, seed=2)
    (tmp_path / "dataset" / "44k" / "a" / "no_f0.wav.f0.npy").unlink()
    short_f0 = _clip(tmp_path, "a", "short_f0.wav", 50, seed=3)
    save_f0(f"{short_f0}.f0.npy", np.full(44, 200.0), np.ones(44))
    gone = str(tmp_path / "dataset" / "44k" / "a" / "gone.wav")
    with caplog.at_level(logging.WARNING):
        ds = TextAudioSpeakerLoader(_list(tmp_path, [good, no_f0, short_f0, gone]), _config(tmp_path, 4, {"a": 0}))
        assert sorted(ds.audiopaths) == sorted([good, short_f0])
        items = [ds[i] for i in range(len(ds))]
    assert f"{no_f0}.f0.npy" in caplog.text and gone in caplog.text
    assert f"skipping {short_f0}: {short_f0}.f0.npy has 44 frames where its 0.59 s clip gives 50" in caplog.text
    assert sum(item is None for item in items) == 1
    batch = TextAudioCollate()(items)
    assert batch[5].tolist() == [50]


def test_missing_spectrogram_is_computed_and_saved(tmp_path) -> None:
    path = _clip(tmp_path, "a", "x.wav", 40)
    expected = torch.load(spec_path(path))
    (tmp_path / "dataset" / "44k" / "a" / "x.spec.pt").unlink()
    ds = TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}), all_in_mem=True)
    torch.testing.assert_close(ds[0][2], expected)
    torch.testing.assert_close(torch.load(spec_path(path)), expected)


def test_float_wav_is_an_error(tmp_path) -> None:
    path = _clip(tmp_path, "a", "f.wav", 30, subtype="FLOAT")
    expected = r"f\.wav is WAV 32 bit float; so-vits-svc expects 44100 Hz mono 16-bit PCM.*resample\.py"
    with pytest.raises(DatasetError, match=expected):
        TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}))


def test_wrong_sample_rate_is_an_error(tmp_path) -> None:
    path = _clip(tmp_path, "a", "r.wav", 30, rate=48000)
    with pytest.raises(DatasetError, match="48000 Hz.*resample.py"):
        TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 4, {"a": 0}))


def test_speaker_missing_from_spk(tmp_path) -> None:
    paths = [_clip(tmp_path, "a", "1.wav", 30), _clip(tmp_path, "zed", "2.wav", 30)]
    expected = r"Speaker 'zed' \(1 clips.*not in the config's spk \(available: a, b\)"
    with pytest.raises(DatasetError, match=expected):
        TextAudioSpeakerLoader(_list(tmp_path, paths), _config(tmp_path, 4, {"a": 0, "b": 1}))


def test_unit_width_differs_from_ssl_dim(tmp_path) -> None:
    path = _clip(tmp_path, "a", "1.wav", 60, ssl_dim=256)
    expected = r"1\.wav\.soft\.pt has 256 channels \(made by e\.g\. vec256l9.*expects 768"
    with pytest.raises(DatasetError, match=expected):
        TextAudioSpeakerLoader(_list(tmp_path, [path]), _config(tmp_path, 768, {"a": 0}))


def test_empty_or_unreadable_filelist(tmp_path) -> None:
    hps = _config(tmp_path, 4, {"a": 0})
    (tmp_path / "train.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="lists no clips"):
        TextAudioSpeakerLoader(str(tmp_path / "train.txt"), hps)
    (tmp_path / "train.txt").write_bytes("./dataset/44k/a/\u4f60.wav\n".encode("gbk"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        TextAudioSpeakerLoader(str(tmp_path / "train.txt"), hps)
    with pytest.raises(DatasetError, match="not found"):
        TextAudioSpeakerLoader(str(tmp_path / "none.txt"), hps)
