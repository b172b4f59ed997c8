"""evaluate.py: the figures on the bundled voices (self-evaluation, an octave shift made with WORLD, speakers
told apart), each figure against an independent computation on a known case, the errors, and the checkpoint
ranking (and train.py --eval_metrics) on a tiny model trained on the session's prepared project."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import evaluate
from conftest import DATA, FIXTURES, PreparedProject
from evaluation.conversion import CONVERSION_KEYS
from evaluation.metrics import (audio_cepstra, content_similarity, loudness_correlation, mcd_db, mel_cepstra,
                                pitch_errors, warp_frequency)
from evaluation.ranking import CHECKPOINT_KEYS, _resyntheses
from evaluation.speaker import SpeakerEncoder, cosine, partial_starts, speaker_mel, trim_pauses

SOURCE = DATA / "source" / "ked_src01.wav"
SPEAKERS = ("kal", "lj", "slt")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, single_thread):
    """dataset/44k/<speaker>/ with the first 6 clips of each bundled voice, the source, and the source moved
    up an octave by WORLD resynthesis (Harvest F0 doubled, same envelope and aperiodicity)."""
    import pyworld

    for needed in (SOURCE, *(DATA / "voices" / s for s in SPEAKERS)):
        if not needed.exists():
            pytest.skip(f"{needed} not available")
    root = tmp_path_factory.mktemp("evaluate")
    for name in SPEAKERS:
        (root / "dataset" / "44k" / name).mkdir(parents=True)
        for clip in sorted((DATA / "voices" / name).glob("*.wav"))[:6]:
            shutil.copy(clip, root / "dataset" / "44k" / name / clip.name)
    x, rate = sf.read(SOURCE)
    f0, times = pyworld.harvest(x, rate, frame_period=5.0)
    sp, ap = pyworld.cheaptrick(x, f0, times, rate), pyworld.d4c(x, f0, times, rate)
    sf.write(root / "octave.wav", pyworld.synthesize(2.0 * f0, sp, ap, rate, 5.0)[:len(x)], rate, subtype="PCM_16")
    sf.write(root / "short.wav", x[:rate * 4], rate, subtype="PCM_16")
    return root


def _report(root, monkeypatch, capsys, *args: str) -> tuple[int, dict | None, str]:
    monkeypatch.chdir(root)
    code = evaluate.main(["-n", str(SOURCE), *args, "--json", "report.json"])
    out = capsys.readouterr()
    data = json.loads((root / "report.json").read_text()) if code == 0 else None
    (root / "report.json").unlink(missing_ok=True)
    return code, data, out.out + out.err


def test_self_evaluation_table_json_and_plot(workdir, monkeypatch, capsys) -> None:
    code, data, text = _report(workdir, monkeypatch, capsys, "-r", str(SOURCE), "-s", "kal", "--plot", "p.png")
    assert code == 0, text
    row = data["conversions"][0]
    assert tuple(row) == CONVERSION_KEYS
    assert row["pitch_rmse_cents"] == 0 and row["pitch_over_50_cents"] == 0 and row["voicing_error"] == 0
    assert row["pitch_frames"] > 400 and row["duration_s"] == pytest.approx(len(sf.read(SOURCE)[0]) / 44100, abs=1e-3)
    assert row["speaker_similarity_source"] == pytest.approx(1.0, abs=1e-5)
    assert row["loudness_correlation"] == pytest.approx(1.0, abs=1e-9)
    assert 0.5 < row["speaker_similarity_target"] < 0.95  # ked is not kal
    assert data["speaker_clips"] == 6 and set(data["skipped"]) == {"content_similarity"}
    assert "pitch RMSE (cents)" in text and "voicing error (%)" in text and "content similarity skipped" in text
    png = (workdir / "p.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_octave_shift_is_measured_in_cents(workdir, monkeypatch, capsys) -> None:
    rows = {}
    for semitones in ("12", "0"):
        code, data, text = _report(workdir, monkeypatch, capsys, "-r", "octave.wav", "-s", "kal", "-t", semitones)
        assert code == 0, text
        rows[semitones] = data["conversions"][0]
    assert rows["12"]["pitch_rmse_cents"] < 80 and rows["12"]["pitch_over_50_cents"] < 0.1
    assert rows["0"]["pitch_rmse_cents"] == pytest.approx(1200, abs=25) and rows["0"]["pitch_over_50_cents"] > 0.97
    assert rows["12"]["voicing_error"] < 0.05 and rows["12"]["loudness_correlation"] > 0.95


def test_pitch_errors_against_hand_computation() -> None:
    truth = json.loads(SOURCE.with_suffix(".json").read_text())
    f0 = np.asarray(truth["f0_hz"])
    voiced = f0 > 0
    up = pitch_errors(f0, voiced, f0 * 2 ** (1 / 12), voiced, semitones=1)
    assert up["rmse_cents"] == pytest.approx(0, abs=1e-9) and up["voicing_error"] == 0
    assert pitch_errors(f0, voiced, f0 * 2 ** (1 / 12), voiced)["rmse_cents"] == pytest.approx(100)
    ref = np.array([100.0, 100.0, 100.0, 200.0, 0.0])
    out = np.array([100.0 * 2 ** (30 / 1200), 100.0 * 2 ** (-60 / 1200), 0.0, 200.0, 150.0])
    result = pitch_errors(ref, ref > 0, out, out > 0)
    assert result["rmse_cents"] == pytest.approx(math.sqrt((30 ** 2 + 60 ** 2 + 0) / 3))
    assert result["over_50_cents"] == pytest.approx(1 / 3) and result["voicing_error"] == pytest.approx(2 / 5)
    assert result["frames"] == 3
    assert pitch_errors(ref, ref * 0, out, out > 0)["rmse_cents"] is None


def test_loudness_and_content_against_numpy() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(44100) / 44100
    envelope = 0.05 + np.abs(np.sin(2 * np.pi * 1.5 * t))
    a = envelope * np.sin(2 * np.pi * 220 * t)
    b = 0.3 * a + 1e-4 * rng.standard_normal(len(a))
    frames = [20 * np.log10(np.sqrt(np.mean(x[:86 * 512].reshape(86, 512) ** 2, axis=1)) + 1e-5) for x in (a, b)]
    assert loudness_correlation(a, b, 512) == pytest.approx(np.corrcoef(*frames)[0, 1], abs=1e-12)
    assert loudness_correlation(a, (1.1 - envelope) * np.sin(2 * np.pi * 220 * t), 512) < -0.5  # opposite swells
    units = rng.standard_normal((8, 30))
    other = rng.standard_normal((8, 30))
    manual = np.mean([u @ v / np.linalg.norm(u) / np.linalg.norm(v) for u, v in zip(units.T, other.T)])
    assert content_similarity(units, other) == pytest.approx(manual)
    assert content_similarity(units, 3 * units[:, :20]) == pytest.approx(1.0)


def test_mcd_is_zero_for_itself_and_grows_with_noise() -> None:
    x, rate = sf.read(DATA / "voices" / "slt" / "slt_01.wav")
    rng = np.random.default_rng(1)
    clean = audio_cepstra(x, rate)
    assert mcd_db(clean, audio_cepstra(x.copy(), rate)) == 0.0
    noisy = [mcd_db(clean, audio_cepstra(x + level * rng.standard_normal(len(x)), rate))
             for level in (0.001, 0.01, 0.05)]
    assert 0 < noisy[0] < noisy[1] < noisy[2]


def test_mel_cepstra_and_mcd_on_a_known_envelope() -> None:
    """Envelopes built from chosen mel-cepstra (log|H| = c0 + sum c_d cos(d w~) on the warped axis) give
    those cepstra back, and two of them differ by exactly 10 sqrt(2) / ln 10 * |delta c| dB."""
    grid = np.linspace(0, np.pi, 1025)
    warped = warp_frequency(grid, 0.544)  # the mel-like frequency of each linear bin at 44.1 kHz
    chosen = np.array([[-3.0, 0.8, -0.3, 0.1], [-2.0, 0.5, -0.3, 0.5]])
    envelopes = np.stack([np.exp(2 * sum(c[d] * np.cos(d * warped) for d in range(4))) for c in chosen])
    cepstra = mel_cepstra(envelopes, 44100)
    assert cepstra[:, :4] == pytest.approx(chosen, abs=2e-3) and np.abs(cepstra[:, 4:]).max() < 2e-3
    distance = mcd_db(cepstra[:1], cepstra[1:])
    assert distance == pytest.approx(10 * math.sqrt(2) / math.log(10) * math.sqrt(0.3 ** 2 + 0.4 ** 2), rel=1e-2)
    with pytest.raises(ValueError, match="12345 Hz"):
        mel_cepstra(envelopes, 12345)


def test_speaker_front_end_against_librosa() -> None:
    import librosa

    wav = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    reference = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert speaker_mel(wav) == pytest.approx(reference, rel=1e-3, abs=1e-6)
    # 1.5 s = 150 frames: one partial; 5 s: partials every 77 frames while they fit (n_frames 501)
    assert partial_starts(24000) == [0] and partial_starts(80000) == [0, 77, 154, 231, 308]
    assert partial_starts(80000 + 160 * 40) == [0, 77, 154, 231, 308, 385]  # 385: 75 % coverage reached
    tone = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    gap = np.concatenate([tone, np.zeros(32000), tone])  # 2 s of silence shrink to a few 30 ms windows:
    # 34 + 33 windows hold tone; smoothing (rounded half down) takes 1, widening adds 3 on each side
    assert len(trim_pauses(gap)) == 480 * (34 + 33 + 2 + 3) and len(trim_pauses(tone)) == 15840


def test_speaker_network_against_a_numpy_lstm(single_thread) -> None:
    """One partial through a plain NumPy LSTM (gates i, f, g, o), the last layer's final state, linear, ReLU, L2."""
    encoder = SpeakerEncoder("cpu")
    weights = {k: v.numpy().astype(np.float64) for k, v in encoder.state_dict().items()}
    mel = np.random.default_rng(4).random((160, 40))

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    inputs = mel
    for layer in range(3):
        h, c, states = np.zeros(256), np.zeros(256), []
        for x in inputs:
            gates = weights[f"lstm.weight_ih_l{layer}"] @ x + weights[f"lstm.bias_ih_l{layer}"] + \
                weights[f"lstm.weight_hh_l{layer}"] @ h + weights[f"lstm.bias_hh_l{layer}"]
            i, f, g, o = np.split(gates, 4)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            states.append(h)
        inputs = np.array(states)
    out = np.maximum(weights["linear.weight"] @ h + weights["linear.bias"], 0)
    with torch.no_grad():
        ours = encoder(torch.from_numpy(mel[None].astype(np.float32)))[0].numpy()
    assert ours == pytest.approx(out / np.linalg.norm(out), abs=1e-5)


def test_weights_load_safely_and_speakers_are_told_apart(single_thread) -> None:
    encoder = SpeakerEncoder("cpu")
    assert [k for k, _ in encoder.named_parameters()][:2] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    clips = {s: [sf.read(p, dtype="float32") for p in sorted((DATA / "voices" / s).glob("*.wav"))] for s in SPEAKERS}
    voices = {s: encoder.embed_speaker(c[:6]) for s, c in clips.items()}
    for name, own in clips.items():
        for audio, rate in own[6:9]:
            embedding = encoder.embed(audio, rate)
            assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
            similarity = {other: cosine(embedding, voice) for other, voice in voices.items()}
            assert all(similarity[name] > similarity[o] + 0.05 for o in SPEAKERS if o != name), (name, similarity)
            assert cosine(embedding, voices[name]) == pytest.approx(float(embedding @ voices[name]), abs=1e-6)


def test_errors(workdir, monkeypatch, capsys) -> None:
    code, _, text = _report(workdir, monkeypatch, capsys, "-r", "short.wav", "-s", "kal")
    assert code == 1 and "short.wav lasts 4.00 s but the source" in text and "8.3" in text
    code, _, text = _report(workdir, monkeypatch, capsys, "-r", str(SOURCE), "-s", "nobody")
    assert code == 1 and text.strip() == ("error: dataset/44k/nobody has no .wav clips to compare the conversion "
                                          "with (speakers in dataset/44k: kal, lj, slt); check -s and --dataset")
    assert evaluate.main(["-n", str(SOURCE), "-s", "kal"]) == 2
    assert evaluate.main(["-m", "logs/run/", "--device", "cuda:99"]) == 2
    assert "error: device cuda:99 cannot be used: " in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, package=None: None if name == "resemblyzer" else find_spec(name, package))
    code, data, text = _report(workdir, monkeypatch, capsys, "-r", str(SOURCE), "-s", "kal")
    assert code == 0 and data["conversions"][0]["speaker_similarity_target"] is None
    assert data["conversions"][0]["pitch_rmse_cents"] == 0
    assert data["skipped"]["speaker_similarity"] == ("speaker similarity skipped: the speaker encoder's weights "
                                                     "(resemblyzer/pretrained.pt) are not installed: pip install "
                                                     "--no-deps resemblyzer==0.1.4")
    assert "\n" not in data["skipped"]["speaker_similarity"] and "pip install --no-deps resemblyzer" in text


TINY_MODEL = dict(ssl_dim=48, hidden_channels=16, inter_channels=8, filter_channels=16, gin_channels=8,
                  upsample_initial_channel=128, flow_share_parameter=True, use_depthwise_conv=True,
                  vol_embedding=False)


@pytest.fixture(scope="module")
def trained(prepared_project: PreparedProject, tmp_path_factory, single_thread):
    """One epoch (two steps) of a tiny model with --eval_metrics (G_0, G_1), plus G_5: G_1 diverged (its decoder's
last layer all zero, which weight norm turns into NaN)."""
    import train

    root = prepared_project.copy_to(tmp_path_factory.mktemp("rank") / "project")
    val = [p for p in (root / "filelists" / "val.txt").read_text(encoding="utf-8").split() if "/slt/" in p]
    (root / "filelists" / "val1.txt").write_text(min(val, key=lambda p: (root / p).stat().st_size) + "\n")
    data = json.loads((root / "configs" / "config.json").read_text())
    data["model"].update(TINY_MODEL)
    data["data"]["validation_files"] = "filelists/val1.txt"
    data["train"].update(batch_size=2, segment_size=2560, log_interval=1, eval_interval=1, keep_ckpts=0, epochs=1,
                         discriminator_width=0.0625, port="0")
    (root / "configs" / "tiny.json").write_text(json.dumps(data))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        assert train.main(["-c", "configs/tiny.json", "-m", "run", "--device", "cpu", "--num_workers", "0",
                           "--eval_metrics"]) == 0
    run = root / "logs" / "run"
    broken = torch.load(run / "G_1.pth", weights_only=True)
    for key in [k for k in broken["model"] if k.startswith("dec.conv_post")]:
        broken["model"][key] = torch.zeros_like(broken["model"][key])
    torch.save(broken, run / "G_5.pth")
    return root


@pytest.mark.slow
def test_train_logs_the_figures_at_each_evaluation(trained) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "logs" / "run" / "eval"), size_guidance={"scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"metrics/mcd_db", "metrics/lf0_rmse_cents", "metrics/speaker_similarity"}
    assert [e.step for e in events.Scalars("metrics/mcd_db")] == [0, 1]
    assert all(0 < e.value < 100 for e in events.Scalars("metrics/mcd_db"))


@pytest.mark.slow
def test_checkpoint_ranking(trained, monkeypatch, capsys) -> None:
    monkeypatch.chdir(trained)
    assert evaluate.main(["-m", "logs/run/", "-c", "configs/tiny.json", "--json", "rank.json"]) == 0
    text = capsys.readouterr().out
    data = json.loads((trained / "rank.json").read_text())
    rows = data["checkpoints"]
    assert [tuple(r) for r in rows] == [CHECKPOINT_KEYS] * 3 and [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[-1]["file"] == "logs/run/G_5.pth" and rows[-1]["mcd_db"] is None and rows[-1]["clips"] == 1
    assert 0 < rows[0]["mcd_db"] <= rows[1]["mcd_db"] and rows[0]["lf0_rmse_cents"] > 0
    assert -1 <= rows[0]["speaker_similarity"] <= 1
    assert data["best"] == rows[0]["file"] in ("logs/run/G_0.pth", "logs/run/G_1.pth")
    assert data["val"] == "filelists/val1.txt" and f"best: {data['best']}" in text and "MCD (dB)" in text
    assert evaluate.main(["-m", "logs/none/", "-c", "configs/tiny.json"]) == 1
    assert "checkpoint logs/none/ not found" in capsys.readouterr().err


@pytest.mark.slow
def test_content_similarity_with_the_configs_encoder(trained, monkeypatch, capsys) -> None:
    """The project's config names vec768l12, whose (tiny test) weights are in pretrain/: the content figure runs,
    and equals the mean frame cosine of the units the encoder gives for the two files."""
    from evaluation.conversion import read_audio
    from modules.audio_io import resample_audio
    from vencoder import get_speech_encoder

    monkeypatch.chdir(trained)
    clip = sorted((trained / "dataset" / "44k" / "slt").glob("*.wav"))[0]
    noisy = read_audio(str(clip)) + 0.05 * np.random.default_rng(3).standard_normal(len(read_audio(str(clip))))
    sf.write("noisy.wav", noisy, 44100, subtype="FLOAT")
    assert evaluate.main(["-n", str(clip), "-r", str(clip), "noisy.wav", "-s", "slt", "--json", "c.json"]) == 0
    rows = json.loads((trained / "c.json").read_text())["conversions"]
    encoder = get_speech_encoder("vec768l12", "cpu")
    units = [encoder.encoder(torch.from_numpy(resample_audio(read_audio(p), 44100, 16000)))[0].numpy()
             for p in (str(clip), "noisy.wav")]
    n = min(u.shape[1] for u in units)
    a, b = units[0][:, :n], units[1][:, :n]
    manual = np.mean(np.sum(a * b, 0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0))
    assert rows[0]["content_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert rows[1]["content_similarity"] == pytest.approx(manual, abs=1e-5) and manual < 0.999
    assert "content sim. (cos)" in capsys.readouterr().out


def test_resyntheses_feed_an_fp16_model_in_its_dtype() -> None:
    """evaluate.py -m with an fp16 file: on CUDA the model is fp16 and the (float32) clips are cast to it."""
    from core.config import load_config
    from generator import build_synthesizer

    net = build_synthesizer(load_config(FIXTURES / "synth" / "vec256_vol" / "config.json"))
    net.eval().remove_weight_norm()
    net.half()
    frames = 24
    item = (torch.randn(256, frames), torch.full((frames,), 220.0), None, None, torch.LongTensor([0]),
            torch.ones(frames), torch.full((frames,), 0.1))
    reference, audio = next(_resyntheses(net, [item], ["ref"], torch.device("cpu"), lambda _: None))
    assert reference == "ref" and audio.dtype == np.float32 and audio.shape == (frames * 512,)
    assert np.isfinite(audio).all()


def test_the_scorer_analyses_each_original_clip_once(monkeypatch) -> None:
    """train.py --eval_metrics hands the scorer the same validation clips at every evaluation."""
    from evaluation.ranking import ResynthesisScorer

    clip = sf.read(DATA / "voices" / "slt" / "slt_01.wav", dtype="float32")[0][:44100]
    scorer = ResynthesisScorer(44100, 512, "pm", "cpu")
    analysed: list[int] = []
    reference = scorer.reference
    monkeypatch.setattr(scorer, "reference", lambda audio: analysed.append(1) or reference(audio))
    noisy = clip + 0.01 * np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32)
    first = scorer([(clip.copy(), noisy)])
    assert scorer([(clip.copy(), noisy)]) == first and len(analysed) == 1
    scorer([(noisy, clip)])
    assert len(analysed) == 2
