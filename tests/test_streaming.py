"""inference/streaming.py: chunk-by-chunk conversion through `Svc` on a tiny model whose output follows F0.

The model is test_infer_tool's tiny workspace model with its NSF source made to dominate the decoder
(`pitch_following_workspace`): the harmonic source is the plain sine at F0 and its last injection is
scaled up, so the pitch of the output is the pitch handed to the model and a transposition is measurable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import parselmouth
import pytest
import soundfile as sf
import torch

from core.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from generator import build_synthesizer
from core.config import load_config
from inference.infer_tool import InferOptions, Svc, SvcError
from inference.options import pad_array
from inference.streaming import StreamConverter
from test_infer_tool import SR, build_workspace

CHUNKS = [13230, 9000, 22050, 1000, 13230, 17000]  # 0.3 s, odd lengths, one shorter than the crossfade


def pitch_following_workspace(root: Path) -> Path:
    """test_infer_tool's workspace, G_1.pth changed so that the output's pitch is the F0 given to the model."""
    build_workspace(root)
    g_path, cfg_path = root / "logs/44k/G_1.pth", root / "logs/44k/config.json"
    state = dict(read_checkpoint(g_path)["model"])
    linear = torch.zeros_like(state["dec.m_source.l_linear.weight"])
    linear[0, 0] = 1.0  # the source is tanh(sine at F0): no random mix of harmonics
    state["dec.m_source.l_linear.weight"], state["dec.m_source.l_linear.bias"] = linear, linear.new_zeros(1)
    last = max(int(k.split(".")[2]) for k in state if k.startswith("dec.noise_convs."))
    state[f"dec.noise_convs.{last}.weight"] = state[f"dec.noise_convs.{last}.weight"] * 100
    net = build_synthesizer(load_config(cfg_path))
    load_model_state(net, state)
    save_checkpoint(net, None, 1e-4, 1, g_path)
    return root


def median_f0(audio: np.ndarray, sr: int = SR) -> np.ndarray:
    """Per-10-ms F0 (Hz, 0 = unvoiced) by Praat's autocorrelation method."""
    pitch = parselmouth.Sound(audio.astype(np.float64), sr).to_pitch_ac(time_step=0.01, pitch_floor=60,
                                                                       pitch_ceiling=1100)
    return pitch.selected_array["frequency"]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, single_thread) -> Svc:
    root = pitch_following_workspace(tmp_path_factory.mktemp("stream"))
    return Svc(root / "logs/44k/G_1.pth", root / "logs/44k/config.json", "cpu", cluster_model_path="",
               pretrain_dir=root / "pretrain")


@pytest.fixture(scope="module")
def voice(svc: Svc) -> np.ndarray:
    root = Path(svc.net_g_path).parents[2]
    return sf.read(root / "raw/short.wav", dtype="float32")[0]


def stream_through(stream: StreamConverter, voice: np.ndarray, tran: float = 0) -> list[np.ndarray]:
    outs, pos = [], 0
    for n in CHUNKS:
        outs.append(stream.process(voice[pos:pos + n], "speaker0", tran))
        pos += n
    return outs


def test_crossfaded_stream_keeps_lengths_and_joins_without_clicks(svc: Svc, voice: np.ndarray) -> None:
    stream = StreamConverter(svc, f0_predictor="pm")
    assert stream.fade == 5 * 512 and stream.context == 9 * 512  # 0.05 s and 0.1 s in whole hops
    outs = stream_through(stream, voice)
    assert [len(o) for o in outs] == CHUNKS and all(o.dtype == np.float32 for o in outs)
    joined = np.concatenate(outs)
    assert np.sqrt(np.mean(joined[stream.fade:] ** 2)) > 0.05  # converted voice, not silence
    seam, inside = seam_and_inside_jumps(joined)
    assert seam <= inside
    assert abs(joined[0]) < 1e-3  # the output runs one crossfade behind, fading in from silence
    stream.reset()  # all state lives in the stream: the same input gives the same output again
    np.testing.assert_array_equal(np.concatenate(stream_through(stream, voice)), joined)


def seam_and_inside_jumps(joined: np.ndarray) -> tuple[float, float]:
    jumps = np.abs(np.diff(joined))
    seams = np.cumsum(CHUNKS)[:-1] - 1
    return jumps[seams].max(), np.delete(jumps, seams).max()


@pytest.mark.parametrize("offset", [0.0, 0.2])
def test_crossfade_arithmetic_on_a_stand_in_model(svc: Svc, monkeypatch, offset: float) -> None:
    """A stand-in conversion returns its window, shifted by `offset` more on every call (each conversion
    differs, as real ones do). Without shift the stream is the input delayed by the crossfade, sample for
    sample; with it the seams stay smooth, and they jump when the crossfade is taken away."""
    calls = []

    def stand_in(wav: np.ndarray, speaker: object, opts: object, frame: int = 0) -> tuple[torch.Tensor, int]:
        assert len(wav) % 512 == 0  # whole frames: the output lines up with the input
        calls.append(wav)
        return torch.from_numpy(wav + offset * len(calls)), len(wav) // 512

    stream = StreamConverter(svc, f0_predictor="pm")
    monkeypatch.setattr(svc, "convert_piece", stand_in)
    sine = (0.5 * np.sin(2 * np.pi * 200 * np.arange(sum(CHUNKS)) / SR)).astype(np.float32)
    joined = np.concatenate(stream_through(stream, sine))
    if offset == 0:
        np.testing.assert_array_equal(joined, np.concatenate([np.zeros(stream.fade), sine])[:len(sine)])
        assert all(len(w) >= stream.context for w in calls)
        return
    seam, inside = seam_and_inside_jumps(joined)
    assert seam <= inside < 0.02
    stream.reset()
    stream._ramp[:] = 1.0
    seam, inside = seam_and_inside_jumps(np.concatenate(stream_through(stream, sine)))
    assert seam > 0.15 > inside


def test_raw_mode_is_svc_on_each_chunk(svc: Svc, voice: np.ndarray) -> None:
    stream = StreamConverter(svc, f0_predictor="pm", raw=True)
    assert stream.fade == 0 and stream.delay_seconds == 0
    chunk = voice[:13230]
    direct = svc.convert_piece(chunk, 1, InferOptions(tran=3, f0_predictor="pm"))[0].numpy()
    np.testing.assert_array_equal(stream.process(chunk, 1, 3), pad_array(direct, len(chunk)))
    with pytest.raises(SvcError, match="raw mode needs chunks of at least 0.104 s"):
        stream.process(voice[:1000], 1)


def test_transposition_doubles_the_output_f0(svc: Svc, voice: np.ndarray) -> None:
    stream = StreamConverter(svc)  # FCPE
    base = median_f0(stream.process(voice, "speaker0", 0))
    stream.reset()
    up = median_f0(stream.process(voice, "speaker0", 12))
    both = (base > 0) & (up > 0)
    assert both.mean() > 0.7
    assert np.median(up[both] / base[both]) == pytest.approx(2.0, rel=0.03)
    source = median_f0(voice)
    assert np.median(base[both]) == pytest.approx(np.median(source[source > 0]), rel=0.1)


def test_other_rates_in_and_out(svc: Svc, voice: np.ndarray) -> None:
    stream = StreamConverter(svc, f0_predictor="pm", crossfade=0.01, context=0.02)
    assert (stream.fade, stream.context) == (512, 9 * 512)  # whole hops; every conversion sees 0.1 s
    assert len(stream.process_at(voice[:24000], 48000, "speaker1")) == 24000
    assert len(stream.process_at(voice[:11025], 22050, "speaker1", out_rate=48000)) == 24000
    assert len(stream.process_at(voice[:1001], 44100, "speaker1", out_rate=16000)) == 364  # ceil(1001 * 16 / 44.1)


def test_bad_speaker_transposition_or_ratio(svc: Svc, voice: np.ndarray) -> None:
    stream = StreamConverter(svc, f0_predictor="pm")
    with pytest.raises(SvcError, match="not in the speaker list"):
        stream.process(voice[:5000], "nobody")
    with pytest.raises(SvcError, match="transposition"):
        stream.process(voice[:5000], 0, 60)
    with pytest.raises(SvcError, match="cluster ratio 0.5 given"):
        StreamConverter(svc, cluster_infer_ratio=0.5)
    with pytest.raises(ValueError, match="Unknown F0 predictor"):
        StreamConverter(svc, f0_predictor="yin")


def test_the_heap_is_trimmed_per_song_piece_not_per_stream_chunk(svc: Svc, voice: np.ndarray, monkeypatch) -> None:
    """Trimming hands the decoder's buffers back to the system; a stream's same-length chunks reuse them."""
    import inference.infer_tool as infer_tool

    trims: list[int] = []
    monkeypatch.setattr(infer_tool, "release_memory", lambda: trims.append(1))
    stream_through(StreamConverter(svc, "pm"), voice)
    assert trims == []
    root = Path(svc.net_g_path).parents[2]
    pieces = list(svc.iter_slice_inference(root / "raw/short.wav", "speaker0", InferOptions(clip_seconds=0.5)))
    assert pieces and len(trims) >= 2
