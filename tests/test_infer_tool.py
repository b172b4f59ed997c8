"""inference/infer_tool.py (`Svc`) end to end on a tiny real model and the shared source voices.

The model is the calibrated 4.1 synth fixture `base_vec768/G_800.pth` with `pre` cut to 48 input
channels, so that the tiny random ContentVec file (`contentvec_reduced.pt`, 48-dim units) can serve
as `pretrain/checkpoint_best_legacy_500.pt`; config = the fixture's with `ssl_dim` 48.
"""
from __future__ import annotations

import json
import math
import shutil
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import DATA, FIXTURES, VENCODER_FIXTURES
from inference.infer_tool import SEED, InferOptions, Svc, SvcError, change_rms
from generator import ModelConfigMismatch
from inference.slice_loop import iter_song, mix_frame_budget
from modules.slicer import FileSource, open_audio, slice_source
from inference.speaker_mix import SpkMixError, build_mix_weights, validate_spk_mix_map
from core.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from vencoder.encoder import PretrainNotFoundError
from core.config import ConfigError, HParams
from generator import build_synthesizer

SYNTH = FIXTURES / "synth" / "base_vec768"
SR = 44100
UNITS = 48


def build_workspace(root: Path) -> Path:
    """logs/44k/{G_1.pth, config.json}, pretrain/ (ContentVec + NSF-HiFiGAN), raw/ with short clips."""
    if not (SYNTH / "G_800.pth").exists() or not (VENCODER_FIXTURES / "contentvec_reduced.pt").exists():
        pytest.skip("synth / vencoder fixtures not available")
    for sub in ("logs/44k", "pretrain/nsf_hifigan", "raw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cfg = json.loads((SYNTH / "config.json").read_text())
    cfg["model"]["ssl_dim"] = UNITS
    (root / "logs/44k/config.json").write_text(json.dumps(cfg, indent=2))
    net = build_synthesizer(HParams(cfg))
    state = dict(read_checkpoint(SYNTH / "G_800.pth")["model"])
    state["pre.weight"] = state["pre.weight"][:, :UNITS] * 4.0  # keep the content term audible
    load_model_state(net, state)
    save_checkpoint(net, None, 1e-4, 1, root / "logs/44k/G_1.pth")
    shutil.copy(VENCODER_FIXTURES / "contentvec_reduced.pt", root / "pretrain/checkpoint_best_legacy_500.pt")
    for name in ("config.json", "model"):
        shutil.copy(FIXTURES / "nsf_hifigan/model_dir" / name, root / "pretrain/nsf_hifigan" / name)
    src, sr = sf.read(DATA / "source/ked_src01.wav", dtype="float32")
    assert sr == SR
    sf.write(root / "raw/short.wav", src[int(1.0 * SR):int(3.0 * SR)], SR, subtype="PCM_16")
    # 5.5 s voice, 1 s digital silence, 1 s voice, 0.6 s silence: the slicer cuts in the gap (two
    # voiced chunks) and makes the trailing silence a silent chunk.
    gapped = np.concatenate([src[:int(5.5 * SR)], np.zeros(SR, np.float32), src[int(6 * SR):int(7 * SR)],
                             np.zeros(int(0.6 * SR), np.float32)])
    sf.write(root / "raw/gapped.wav", gapped, SR, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("svc"))


@pytest.fixture(scope="module")
def svc(ws: Path) -> Svc:
    return Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
               spk_mix_enable=True, pretrain_dir=ws / "pretrain")


@pytest.fixture
def spy(svc: Svc, monkeypatch) -> list[dict]:
    """Record what the So-VITS model receives and returns on each call."""
    calls: list[dict] = []
    real = svc.net_g_ms.infer

    def record(c, f0, uv, g=None, noice_scale=0.35, predict_f0=False, vol=None):
        audio, f0_used = real(c, f0=f0, uv=uv, g=g, noice_scale=noice_scale, predict_f0=predict_f0, vol=vol)
        calls.append({"c": c.clone(), "f0": f0.clone(), "uv": uv.clone(), "g": g.clone(), "audio": audio.clone(),
                      "f0_used": f0_used.clone(), "predict_f0": predict_f0})
        return audio, f0_used

    monkeypatch.setattr(svc.net_g_ms, "infer", record)
    return calls


def _short(ws: Path) -> np.ndarray:
    return sf.read(ws / "raw/short.wav", dtype="float32")[0]


def test_song_keeps_length_and_silent_chunks_are_zero(svc: Svc, ws: Path) -> None:
    path = ws / "raw/gapped.wav"
    with FileSource(path) as src:
        chunks = slice_source(src, -40)
        n = src.n_samples
    assert [c.silent for c in chunks] == [False, False, True]
    assert chunks[2].length > 0.5 * SR
    out = svc.slice_inference(path, "speaker0", 0)
    assert out.dtype == np.float32 and len(out) == n
    assert np.all(out[chunks[2].start:] == 0)
    assert np.sqrt(np.mean(out[:chunks[0].end] ** 2)) > 0.01
    assert np.sqrt(np.mean(out[chunks[1].start:chunks[1].end] ** 2)) > 0.01


def test_other_input_rate_gives_ceil_length_per_chunk(svc: Svc, ws: Path, tmp_path: Path) -> None:
    audio = librosa.resample(_short(ws), orig_sr=SR, target_sr=22050)
    path = tmp_path / "low.wav"
    sf.write(path, audio, 22050, subtype="PCM_16")
    with FileSource(path) as src:
        want = sum(math.ceil(c.length / 22050 * SR) for c in slice_source(src, -40))
    assert len(svc.slice_inference(path, "speaker1", 0)) == want


def test_pieces_are_pcm16_quantised_padded_and_trimmed(svc: Svc, ws: Path, monkeypatch) -> None:
    seen = []
    real = svc.convert_piece

    def record(wav, speaker, opts, frame=0):
        audio, frames = real(wav, speaker, opts, frame)
        seen.append((wav, audio))
        return audio, frames

    monkeypatch.setattr(svc, "convert_piece", record)
    src = _short(ws)
    out = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0, pad_seconds=0.25)
    (wav, audio), = seen
    pad = int(SR * 0.25)
    assert len(wav) == len(src) + 2 * pad
    np.testing.assert_array_equal(wav * 32768, np.round(wav * 32768))  # 16-bit steps
    assert len(audio) == (len(wav) // 512) * 512
    trimmed = audio.numpy()[pad:-pad]
    left = (len(src) - len(trimmed)) // 2
    np.testing.assert_array_equal(out[left:left + len(trimmed)], trimmed)
    assert np.all(out[:left] == 0) and len(out) == len(src)


def test_transposition_by_12_doubles_the_f0_handed_to_the_model(svc: Svc, ws: Path, spy: list) -> None:
    wav = _short(ws)
    svc.convert_piece(wav, "speaker0", InferOptions(tran=0))
    svc.convert_piece(wav, "speaker0", InferOptions(tran=12))
    base, up = spy
    assert float(base["f0"].max()) > 50
    torch.testing.assert_close(up["f0"], base["f0"] * 2, rtol=1e-6, atol=0)
    assert torch.equal(up["uv"], base["uv"]) and torch.equal(up["c"], base["c"])
    assert not torch.equal(up["audio"], base["audio"])


def test_auto_predict_f0_uses_the_models_f0(svc: Svc, ws: Path, spy: list) -> None:
    svc.convert_piece(_short(ws), "speaker2", InferOptions(auto_predict_f0=True))
    call, = spy
    assert call["predict_f0"] is True
    assert not torch.allclose(call["f0_used"], call["f0"])


def test_pad_seconds_zero_keeps_the_audio(svc: Svc, ws: Path) -> None:
    out = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0, pad_seconds=0)
    assert len(out) == len(_short(ws)) and np.sqrt(np.mean(out ** 2)) > 0.01  # 4.1 returned silence


@pytest.mark.parametrize("lgr", [0.75, 1.0])
def test_forced_clips_are_crossfaded_as_specified(svc: Svc, ws: Path, monkeypatch, lgr: float) -> None:
    pieces = []
    real = svc.convert_piece
    monkeypatch.setattr(svc, "convert_piece", lambda *a: pieces.append(real(*a)) or pieces[-1])
    src = _short(ws)
    out = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0, clip_seconds=0.8, lg_num=0.2, lgr_num=lgr,
                              pad_seconds=0.1)
    assert len(pieces) == 3 and len(out) == len(src)
    per, lg, pad = int(0.8 * SR), int(0.2 * SR), int(0.1 * SR)
    r = int(lg * lgr)
    cl = (lg - r) // 2
    cr = lg - r - cl
    w = np.linspace(0, 1, r)
    expect = np.zeros(0)
    for k, (audio, _) in enumerate(pieces):  # 4.1's cross-fade, written out independently
        n_k = len(src[max(0, k * per - lg):k * per + per])
        a = audio.numpy()[pad:-pad].astype(np.float64)
        a = np.pad(a, ((n_k - len(a)) // 2, n_k - len(a) - (n_k - len(a)) // 2))
        if k == 0:
            expect = a
        elif lgr != 1:
            blend = expect[-(r + cr):-cr] * (1 - w) + a[cl:cl + r] * w
            expect = np.concatenate([expect[:-(r + cr)], blend, a[cl + r:]])
        else:
            blend = expect[-lg:] * (1 - w) + a[:lg] * w
            expect = np.concatenate([expect[:-lg], blend, a[lg:]])
    np.testing.assert_allclose(out, expect, atol=1e-6)


def test_speaker_mix_weights_reach_the_model(svc: Svc, ws: Path, spy: list) -> None:
    mix = {0: [[0.0, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 0.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]}
    n = len(_short(ws))
    out = svc.slice_inference(ws / "raw/short.wav", mix, 0, use_spk_mix=True)
    assert len(out) == n
    call, = spy
    g = call["g"].numpy()
    total = (n + 2 * int(SR * 0.5)) // 512 + 1  # 4.1 budgets the padded piece + 1 per chunk
    t = np.arange(g.shape[0])
    want = np.stack([1 - t / total, t / total, np.zeros_like(t, dtype=float)], axis=1)
    assert g.shape == (call["f0"].shape[1], 3)
    np.testing.assert_allclose(g, want, atol=1e-5)
    plain = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0)
    assert not np.allclose(out, plain, atol=1e-3)


def test_mix_budget_and_weights_follow_the_4_1_formulas() -> None:
    from modules.slicer import Chunk

    chunks = [Chunk(0, 1000, False), Chunk(1000, 1500, True), Chunk(1500, 9000, False)]
    opts = InferOptions(pad_seconds=0.5, clip_seconds=0.1, lg_num=0.02)
    sr = 16000  # forced pieces of 1600 samples, each after the first starting 320 early
    pad = 8000  # 4.1 adds the pad in input-rate samples
    pieces = [1000, 1600, 1920, 1920, 1920, 1420]
    want = sum((math.ceil(n / sr * SR) + 2 * pad) // 512 for n in pieces) + math.ceil(500 / sr * SR) // 512
    assert mix_frame_budget(chunks, sr, opts, SR, 512) == want + 3
    weights = build_mix_weights({0: [[0, 0.5, 2, 2], [0.5, 1, 0, 0]], 1: [[0, 1, 0, 0]]}, 10)
    np.testing.assert_allclose(weights.numpy(), [[1] * 5 + [0.5] * 5, [0] * 5 + [0.5] * 5])


@pytest.mark.parametrize("bad", [{"pad_seconds": -1}, {"clip_seconds": -0.5}, {"lg_num": -1}, {"lgr_num": 0},
                                 {"lgr_num": 1.5}])
def test_invalid_slicing_options_are_refused(bad: dict) -> None:
    with pytest.raises(SvcError, match=r"must be >= 0|must be in \(0, 1\]"):
        InferOptions(**bad)


def test_song_loop_without_a_model() -> None:
    """iter_song alone: padding reaches `convert` and is trimmed, silence stays zero, frames advance."""
    sr, hop, pad = 16000, 320, 0.125
    voice = (np.sin(np.arange(int(7.5 * sr)) * 0.05) * 0.5).astype(np.float32)
    song = np.concatenate([voice[:int(5.5 * sr)], np.zeros(sr, np.float32), voice[:sr], np.zeros(sr, np.float32)])
    chunks = slice_source(open_audio((song, sr)), -40)
    assert [c.silent for c in chunks] == [False, False, True]
    seen: list[tuple[int, int]] = []

    def convert(wav: np.ndarray, speaker: str, frame: int) -> tuple[np.ndarray, int]:
        assert speaker == "x"
        seen.append((len(wav), frame))
        return wav * 2, len(wav) // hop

    ticks: list[tuple[int, int]] = []
    out = np.concatenate(list(iter_song(convert, sr, hop, (song, sr), "x", InferOptions(pad_seconds=pad),
                                        lambda i, n: ticks.append((i, n)))))
    p = int(sr * pad)
    assert len(out) == len(song)
    assert seen == [(chunks[0].length + 2 * p, 0), (chunks[1].length + 2 * p, (chunks[0].length + 2 * p) // hop)]
    for c in chunks[:2]:  # each piece comes back doubled, 16-bit quantised, padding trimmed
        np.testing.assert_allclose(out[c.start:c.end], 2 * song[c.start:c.end], atol=2.01 / 32768)
    assert np.all(out[chunks[2].start:] == 0)
    assert ticks == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_song_loop_hands_mix_weights_to_convert() -> None:
    sr, hop = 16000, 320
    frames: list[torch.Tensor] = []

    def convert(wav: np.ndarray, weights: torch.Tensor, frame: int) -> tuple[np.ndarray, int]:
        n = len(wav) // hop
        frames.append(weights[:, frame:frame + n])
        return wav, n

    mix = {0: [[0.0, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 0.0, 1.0]]}
    song = np.sin(np.arange(sr) * 0.05).astype(np.float32)
    list(iter_song(convert, sr, hop, (song, sr), mix, InferOptions(use_spk_mix=True)))
    (weights,) = frames
    total = (sr + 2 * int(sr * 0.5)) // hop + 1
    assert weights.shape == (2, (sr + 2 * int(sr * 0.5)) // hop)
    torch.testing.assert_close(weights[1], torch.arange(weights.shape[1]) / total)


def test_stage_hook_sees_every_stage_once_per_piece(svc: Svc, ws: Path, tmp_path: Path) -> None:
    import contextlib

    entered: list[str] = []
    depth = [0]

    @contextlib.contextmanager
    def hook(name: str):
        assert depth[0] == 0, f"{name} nested in another stage"
        entered.append(name)
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    svc.stage_hook = hook
    try:
        svc.convert_file(ws / "raw/short.wav", tmp_path / "out.flac", "speaker0", InferOptions(f0_predictor="dio"))
    finally:
        svc.stage_hook = contextlib.nullcontext
    assert entered[0] == "writing" and entered[-1] == "writing"  # the file is opened first, closed last
    assert entered.count("slicing") == 1 and entered.count("loading") == 1  # a new F0 predictor was built
    pieces = entered.count("piece preparation")
    assert pieces >= 1 and entered.count("F0") == entered.count("encoder") == entered.count("synthesizer") == pieces


@pytest.mark.parametrize("bad, where", [
    ({0: [[0.1, 1, 1, 1]], 1: [[0, 1, 1, 1]]}, r"spk_mix_map\[0\]\[0\].*start at 0"),
    ({0: [[0, 0.5, 1, 1], [0.6, 1, 1, 1]], 1: [[0, 1, 1, 1]]}, r"spk_mix_map\[0\]\[1\].*contiguous"),
    ({0: [[0, 1, 1, 1]], 1: [[0, 1, -1, 1]]}, r"spk_mix_map\[1\]\[0\].*>= 0"),
    ({0: [[0, 0.9, 1, 1]], 1: [[0, 1, 1, 1]]}, r"spk_mix_map\[0\]: the last segment must end at 1"),
    ({0: [[0, 1, 1, 1]]}, r"missing ids \[1\]"),
    ({0: [[0, 1, 1]], 1: [[0, 1, 1, 1]]}, r"spk_mix_map\[0\]\[0\].*four numbers"),
])
def test_spkmix_validation_points_at_the_bad_entry(bad: dict, where: str) -> None:
    with pytest.raises(SpkMixError, match=where):
        validate_spk_mix_map(bad, {"a": 0, "b": 1})


def test_default_spkmix_file_is_valid() -> None:
    import spkmix

    assert validate_spk_mix_map(spkmix.spk_mix_map, {"x": 0, "y": 1, "z": 2}).keys() == {0, 1, 2}


def test_loudness_envelope_adjustment(svc: Svc, ws: Path) -> None:
    wav = _short(ws) * np.linspace(0.05, 1, len(_short(ws)), dtype=np.float32)  # rising input loudness
    kept, _ = svc.convert_piece(wav, "speaker0", InferOptions(loudness_envelope_adjustment=1))
    imposed, _ = svc.convert_piece(wav, "speaker0", InferOptions(loudness_envelope_adjustment=0))
    # the formula, computed independently with librosa and numpy (half-pixel linear resize)
    out = kept.numpy()

    def envelope(x: np.ndarray) -> np.ndarray:
        rms = librosa.feature.rms(y=x, frame_length=SR // 2 * 2, hop_length=SR // 2)[0].astype(np.float64)
        pos = (np.arange(len(out)) + 0.5) * len(rms) / len(out) - 0.5
        return np.interp(pos, np.arange(len(rms)), rms)

    want = out * envelope(wav) / np.maximum(envelope(out), 1e-6)
    np.testing.assert_allclose(imposed.numpy(), want, atol=2e-5, rtol=1e-4)
    half = torch.from_numpy(out.copy())
    np.testing.assert_allclose(change_rms(wav, SR, half, SR, 0.5).numpy(),
                               out * np.sqrt(envelope(wav) / np.maximum(envelope(out), 1e-6)), atol=2e-5, rtol=1e-4)
    assert np.array_equal(half.numpy(), out)  # the caller's tensor is untouched
    ratio = np.sqrt(np.mean(imposed.numpy()[:SR // 2] ** 2)) / np.sqrt(np.mean(imposed.numpy()[-SR // 2:] ** 2))
    assert ratio < 0.5  # the output now rises like the input
    # A NaN in the model's output stays in the audio (convert_file then blames the model), not the input.
    broken = torch.full((SR,), float("nan"))
    assert torch.isnan(change_rms(wav, SR, broken, SR, 0.5)).all()


def test_enhancer_is_the_vocoder_pass_over_the_sovits_output(svc: Svc, ws: Path, spy: list) -> None:
    from inference.enhancer import Enhancer

    wav = _short(ws)
    plain, _ = svc.convert_piece(wav, "speaker1", InferOptions())
    enhancer = Enhancer("nsf-hifigan", ws / "pretrain/nsf_hifigan/model", device="cpu")
    svc.enhancer = enhancer
    try:
        enhanced, _ = svc.convert_piece(wav, "speaker1", InferOptions(enhancer_adaptive_key=2))
    finally:
        svc.enhancer = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        want, _ = enhancer.enhance(plain[None], SR, spy[0]["f0_used"][:, :, None], 512, adaptive_key=2)
    assert len(enhanced) == len(want) and abs(len(enhanced) - len(plain)) < 64  # rate change rounds
    torch.testing.assert_close(enhanced, want)
    n = min(len(enhanced), len(plain))
    assert not torch.allclose(enhanced[:n], plain[:n], atol=1e-3)


class _NearestCentre:
    """Stand-in UnitMixer: nearest of fixed centres (what k-means mixing does)."""
    kind, path = "kmeans", "fake.pt"

    def __init__(self) -> None:
        self.centres = np.random.default_rng(0).standard_normal((6, UNITS)).astype(np.float32)
        self.speakers: list[tuple[str, int]] = []

    def mix(self, units: np.ndarray, speaker: str, speaker_id: int, ratio: float) -> np.ndarray:
        self.speakers.append((speaker, speaker_id))
        d = ((units[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return ratio * self.centres[d.argmin(1)] + (1 - ratio) * units


def test_cluster_ratio_mixes_units_through_the_seam(svc: Svc, ws: Path, spy: list, monkeypatch) -> None:
    wav = _short(ws)
    with pytest.raises(SvcError, match="cluster ratio 0.5 given but logs/44k/kmeans_10000.pt not found"):
        svc.convert_piece(wav, "speaker2", InferOptions(cluster_infer_ratio=0.5))
    mixer = _NearestCentre()
    monkeypatch.setattr(svc, "unit_mixer", mixer)
    svc.convert_piece(wav, "speaker2", InferOptions(cluster_infer_ratio=0))
    svc.convert_piece(wav, "speaker2", InferOptions(cluster_infer_ratio=0.5))
    plain, mixed = spy[-2]["c"][0].T.numpy(), spy[-1]["c"][0].T.numpy()
    nearest = mixer.centres[((plain[:, None] - mixer.centres[None]) ** 2).sum(-1).argmin(1)]
    np.testing.assert_allclose(mixed, 0.5 * nearest + 0.5 * plain, atol=1e-6)
    assert mixer.speakers == [("speaker2", 2)]


def test_unknown_speaker_lists_the_models_speakers(svc: Svc, ws: Path) -> None:
    with pytest.raises(SvcError, match=r"not in the speaker list.*'nobody'.*available: speaker0, speaker1, speaker2"):
        svc.slice_inference(ws / "raw/short.wav", "nobody", 0)
    with pytest.raises(SvcError):
        svc.speaker_id(3)  # id == count is not a speaker


def _svc_with_config(ws: Path, tmp_path: Path, edit) -> Svc:
    cfg = json.loads((ws / "logs/44k/config.json").read_text())
    edit(cfg)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return Svc(ws / "logs/44k/G_1.pth", path, "cpu", cluster_model_path="", pretrain_dir=ws / "pretrain")


def test_model_config_mismatches_are_explained(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelConfigMismatch, match=r"takes 48-dim units but .* model.ssl_dim = 256"):
        _svc_with_config(ws, tmp_path, lambda c: c["model"].update(ssl_dim=256))
    with pytest.raises(ModelConfigMismatch, match=r"has 3 speakers .* model.n_speakers = 4"):
        _svc_with_config(ws, tmp_path, lambda c: c["model"].update(n_speakers=4))
    with pytest.raises(ConfigError, match=r"config.json: model.ssl_dim is missing"):
        _svc_with_config(ws, tmp_path, lambda c: c["model"].pop("ssl_dim"))
    with pytest.raises(ConfigError, match=r"spk\['x'\] = 7 is outside 0..2 \(model.n_speakers\)"):
        _svc_with_config(ws, tmp_path, lambda c: c["spk"].update(x=7))
    with pytest.raises(ModelConfigMismatch, match=r"check model.vol_embedding.*emb_vol"):
        _svc_with_config(ws, tmp_path, lambda c: c["model"].update(vol_embedding=True))


def test_encoder_width_mismatch_on_a_4_1_checkpoint(ws: Path) -> None:
    # the real 4.1 fixture checkpoint takes 768-dim units; the tiny ContentVec file gives 48
    with pytest.raises(ModelConfigMismatch, match=r"takes 768-dim units but speech_encoder 'vec768l12' gives 48"):
        Svc(SYNTH / "G_800.pth", SYNTH / "config.json", "cpu", cluster_model_path="", pretrain_dir=ws / "pretrain")


def test_encoder_width_no_encoder_gives() -> None:
    # no registered encoder gives 48-dim units: the message says so instead of failing on an empty list
    from generator import check_encoder_width
    with pytest.raises(ModelConfigMismatch, match=r"takes 48-dim units but speech_encoder 'vec256l9' gives 256\. "
                                                  r"Use the speech encoder the model was trained with in the model "
                                                  r"section of c.json"):
        check_encoder_width("vec256l9", 256, 48, "c.json")
    check_encoder_width("vec256l9", 256, 256, "c.json")


def test_missing_encoder_file_names_it(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(PretrainNotFoundError, match=r"checkpoint_best_legacy_500.pt is missing"):
        Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="", pretrain_dir=tmp_path)


def test_enhancer_release_name_is_explained(ws: Path, tmp_path: Path) -> None:
    (tmp_path / "nsf_hifigan").mkdir()
    shutil.copy(VENCODER_FIXTURES / "contentvec_reduced.pt", tmp_path / "checkpoint_best_legacy_500.pt")
    shutil.copy(ws / "pretrain/nsf_hifigan/model", tmp_path / "nsf_hifigan/model.ckpt")
    with pytest.raises(FileNotFoundError, match=r"ships model.ckpt; rename it"):
        Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
            nsf_hifigan_enhance=True, pretrain_dir=tmp_path)


def test_out_of_memory_gives_advice(svc: Svc, ws: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(svc.net_g_ms, "infer", boom)
    with pytest.raises(SvcError, match=r"Out of memory on a 3\.0 s slice — use -cl 30 .* -sd to -30"):
        svc.slice_inference(ws / "raw/short.wav", "speaker0", 0)


def test_a_gpu_that_is_not_there_is_refused_clearly(ws: Path, monkeypatch) -> None:
    """-d cuda without CUDA, or -d cuda:1 where CUDA_VISIBLE_DEVICES leaves one GPU: one line, not a traceback."""
    args = (ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SvcError, match=r"^device cuda cannot be used: no CUDA GPU is available; choose another "):
        Svc(*args, "cuda", cluster_model_path="", pretrain_dir=ws / "pretrain")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SvcError, match=r"^device cuda:1 cannot be used: this process sees 1 CUDA GPU\(s\), cuda:0 to"):
        Svc(*args, "cuda:1", cluster_model_path="", pretrain_dir=ws / "pretrain")
    with pytest.raises(SvcError, match=r"^unknown device 'gpu'; use cpu, cuda or cuda:N; choose another "):
        Svc(*args, "gpu", cluster_model_path="", pretrain_dir=ws / "pretrain")  # the servers' -d reaches Svc directly


def test_long_song_streams_in_bounded_memory(svc: Svc, ws: Path, tmp_path: Path) -> None:
    """5 minutes at 44.1 kHz (53 MB as float32) with one sung phrase: peak NumPy memory stays far
    below the song size, and output leaves slice by slice."""
    minutes = 5
    path = tmp_path / "long.wav"
    phrase = np.concatenate([_short(ws)[:SR // 2], np.zeros(SR // 2, np.float32)])
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for second in range(minutes * 60):
            f.write(phrase if second == 150 else np.zeros(SR, np.float32))
    ticks: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        written = svc.convert_file(path, tmp_path / "long.flac", "speaker0", InferOptions(), "flac",
                                   progress=lambda i, n: ticks.append((i, n)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == minutes * 60 * SR == sf.info(tmp_path / "long.flac").frames
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MB"
    n = ticks[-1][1]
    assert n >= 3 and ticks == [(i, n) for i in range(n + 1)]


def test_unload_model_frees_the_generator_and_load_model_brings_it_back(ws: Path) -> None:
    svc = Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
              pretrain_dir=ws / "pretrain")
    before = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0)
    svc.unload_model()
    assert svc.net_g_ms is None and svc.enhancer is None
    with pytest.raises(SvcError, match=r"G_1\.pth is unloaded; load the model again"):
        svc.slice_inference(ws / "raw/short.wav", "speaker0", 0)
    svc.load_model()
    np.testing.assert_array_equal(svc.slice_inference(ws / "raw/short.wav", "speaker0", 0), before)


def test_unload_frees_the_generator_and_load_brings_it_back(ws: Path) -> None:
    """4.1's unload_model / load_model: the generator (and whatever runs it) is gone after the unload, and the
    reloaded one is the one that converts, with speaker mixing still on."""
    import weakref

    svc = Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
              pretrain_dir=ws / "pretrain", spk_mix_enable=True)
    before = svc.slice_inference(ws / "raw/short.wav", "speaker0", 0)
    old = weakref.ref(svc.net_g_ms)
    svc.unload_model()
    assert svc.net_g_ms is None and svc.synthesizer is None and old() is None
    svc.load_model()
    assert svc.synthesizer is svc.net_g_ms is not None and svc.net_g_ms.character_mix
    np.testing.assert_array_equal(svc.slice_inference(ws / "raw/short.wav", "speaker0", 0), before)
