"""flask_api.py (the VST protocol) and flask_api_full_song.py, each started as a subprocess on a free
localhost port and spoken to over real HTTP, on test_streaming's tiny model whose output follows F0."""
from __future__ import annotations

import io
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask

import flask_api
import flask_api_full_song
from bench.realtime import post_form, running_server, wav_bytes
from inference.serving import FifoLock, serve
from test_infer_tool import SR
from test_streaming import median_f0, pitch_following_workspace

pytestmark = pytest.mark.slow
MODEL = ["-m", "logs/44k/G_1.pth", "-c", "logs/44k/config.json"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = pitch_following_workspace(tmp_path_factory.mktemp("servers"))
    (root / "secret.wav").write_bytes((root / "raw/short.wav").read_bytes())
    return root


@pytest.fixture(scope="module")
def voice(ws: Path) -> np.ndarray:
    return sf.read(ws / "raw/short.wav", dtype="float32")[0]


@pytest.fixture(scope="module")
def vst(ws: Path):
    with running_server("flask_api.py", MODEL, ws, threads=1) as server:
        yield server


@pytest.fixture(scope="module")
def song_server(ws: Path):
    with running_server("flask_api_full_song.py", [*MODEL, "-f0p", "pm"], ws, threads=1) as server:
        yield server


def change(vst, chunk: bytes, **fields: str) -> tuple[int, bytes]:
    form = {"fPitchChange": "0", "sampleRate": "44100", "sSpeakId": "0", **fields}
    return post_form(f"{vst.url}/voiceChangeModel", form, {"sample": chunk})


def decode(body: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(body), dtype="float32")


def test_reply_is_a_wav_at_the_requested_rate(vst, voice: np.ndarray) -> None:
    status, body = change(vst, wav_bytes(voice[:22050], SR), sampleRate="48000", sSpeakId="2")
    assert status == 200
    out, rate = decode(body)
    assert rate == 48000 and len(out) == 24000 and np.sqrt(np.mean(out ** 2)) > 0.05
    low = voice[:22050:2]  # a 22.05 kHz chunk
    status, body = change(vst, wav_bytes(low, 22050), sampleRate="44100")
    assert status == 200 and decode(body)[1] == 44100 and len(decode(body)[0]) == 2 * len(low)


def test_pitch_change_of_12_doubles_the_f0(vst, voice: np.ndarray) -> None:
    chunk = wav_bytes(voice, SR)  # 2 s: the crossfade at its start is a small share
    f0 = {}
    for tran in ("0", "12"):
        status, body = change(vst, chunk, fPitchChange=tran)
        assert status == 200
        f0[tran] = median_f0(decode(body)[0])
    both = (f0["0"] > 0) & (f0["12"] > 0)
    assert both.mean() > 0.7
    assert np.median(f0["12"][both] / f0["0"][both]) == pytest.approx(2.0, rel=0.03)


def test_eight_concurrent_requests_are_all_answered(vst, voice: np.ndarray) -> None:
    chunks = [wav_bytes(voice[i * 5000:i * 5000 + 11025 + i * 100], SR) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda c: change(vst, c, sampleRate="22050"), chunks))
    assert [status for status, _ in replies] == [200] * 8
    assert [len(decode(body)[0]) for _, body in replies] == [-(-(11025 + i * 100) // 2) for i in range(8)]


@pytest.mark.parametrize("files, fields, reason", [
    ({}, {}, "the request has no 'sample' file"),
    ({"sample": b"RIFF....WAVEfmt nonsense"}, {}, "sample: not a readable audio file"),
    ({"sample": b""}, {}, "sample: not a readable audio file"),
    ("voice", {"sSpeakId": "3"}, "unknown speaker '3'; this model has 0=speaker0, 1=speaker1, 2=speaker2"),
    ("voice", {"sSpeakId": "speaker1"}, "the speaker must be an index 0-2"),
    ("voice", {"sampleRate": "0"}, "sampleRate must be one of 8000, "),
    ("voice", {"sampleRate": "-44100"}, "sampleRate must be one of"),
    ("voice", {"sampleRate": "1e12"}, "sampleRate must be one of"),
    ("voice", {"sampleRate": "fast"}, "sampleRate must be one of"),
    ("voice", {"fPitchChange": "nan"}, "fPitchChange must be between -53 and 53"),
    ("voice", {"fPitchChange": "high"}, "fPitchChange must be a number"),
    ("long", {}, "sample lasts 6.00 s; the limit is 5 s"),
    ("huge", {}, "request body over the 8 MiB limit"),
    ("odd_rate", {}, "sample has a sample rate of 44101 Hz"),
    ("nan", {}, "sample: contains NaN or infinite samples"),
])
def test_bad_requests_get_400_and_the_next_one_works(vst, voice: np.ndarray, files, fields, reason: str) -> None:
    samples = {"voice": wav_bytes(voice[:4410], SR), "long": wav_bytes(np.zeros(6 * SR, np.float32), SR),
               "huge": b"\0" * (9 << 20), "odd_rate": wav_bytes(voice[:4410], 44101)}
    buffer = io.BytesIO()
    sf.write(buffer, np.full(100, np.nan, np.float32), SR, format="WAV", subtype="FLOAT")
    samples["nan"] = buffer.getvalue()
    files = {"sample": samples[files]} if isinstance(files, str) else files
    status, body = post_form(f"{vst.url}/voiceChangeModel", {"sampleRate": "44100", **fields}, files)
    text = body.decode()
    assert status == 400 and text.startswith(reason) and text.count("\n") == 1, text
    assert change(vst, wav_bytes(voice[:4410], SR))[0] == 200


def test_one_log_line_per_request_with_latency(vst, voice: np.ndarray) -> None:
    change(vst, wav_bytes(voice[:4410], SR), sSpeakId="9")
    change(vst, wav_bytes(voice[:4410], SR))
    time.sleep(0.2)
    lines = [line for line in vst.log.read_text().splitlines() if "POST /voiceChangeModel" in line]
    assert lines[-2].endswith(" s") and " 400 " in lines[-2] and " 200 " in lines[-1]
    assert float(lines[-1].split(" in ")[1].split()[0]) > 0


def test_song_upload_and_raw_path(song_server, ws: Path) -> None:
    song = (ws / "raw/short.wav").read_bytes()
    status, body = post_form(f"{song_server.url}/wav2wav", {"tran": "2", "spk": "speaker1", "wav_format": "flac"},
                             {"audio": song})
    assert status == 200
    out, rate = decode(body)
    assert rate == SR and len(out) == 2 * SR and sf.info(io.BytesIO(body)).format == "FLAC"
    status, body = post_form(f"{song_server.url}/wav2wav", {"audio_path": "raw/short.wav", "tran": "2", "spk": "1",
                                                            "wav_format": "flac"})
    assert status == 200 and np.array_equal(decode(body)[0], out)  # index 1 is speaker1; same seed, same audio


@pytest.mark.parametrize("fields, reason", [
    ({"audio_path": "secret.wav"}, "audio_path must name a file inside raw/"),
    ({"audio_path": "raw/../secret.wav"}, "audio_path must name a file inside raw/"),
    ({"audio_path": "/etc/passwd"}, "audio_path must name a file inside raw/"),
    ({"audio_path": "raw/missing.wav"}, "audio_path must name a file inside raw/"),
    ({}, "send the song as an 'audio' file"),
    ({"audio_path": "raw/short.wav", "spk": "nobody"}, "unknown speaker 'nobody'"),
    ({"audio_path": "raw/short.wav", "wav_format": "exe"}, "unknown wav_format 'exe'"),
    ({"audio_path": "raw/short.wav", "tran": "99"}, "tran must be between -53 and 53"),
])
def test_song_server_refuses_bad_requests(song_server, fields, reason: str) -> None:
    status, body = post_form(f"{song_server.url}/wav2wav", fields)
    assert status == 400 and body.decode().startswith(reason), body


def test_conversion_error_is_500_and_the_server_goes_on(ws: Path, voice: np.ndarray, monkeypatch) -> None:
    from inference.infer_tool import Svc
    from inference.streaming import StreamConverter

    svc = Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", "", pretrain_dir=ws / "pretrain")
    args = flask_api.build_parser().parse_args([*MODEL, "-f0p", "pm", "--raw"])
    client = flask_api.create_app(svc, args).test_client()
    good = {"sample": (io.BytesIO(wav_bytes(voice[:8820], SR)), "a.wav"), "sSpeakId": "1"}
    real = StreamConverter.process

    def broken(*args: object) -> None:
        raise RuntimeError("boom\nhere")

    monkeypatch.setattr(StreamConverter, "process", broken)
    reply = client.post("/voiceChangeModel", data=dict(good))
    assert reply.status_code == 500 and reply.get_data(as_text=True) == "conversion failed: boom here\n"
    monkeypatch.setattr(StreamConverter, "process", real)
    good["sample"] = (io.BytesIO(wav_bytes(voice[:8820], SR)), "a.wav")
    reply = client.post("/voiceChangeModel", data=good)
    assert reply.status_code == 200 and len(decode(reply.get_data())[0]) == 8820
    short = {"sample": (io.BytesIO(wav_bytes(voice[:2000], SR)), "a.wav")}  # raw mode: 0.1 s at least
    assert client.post("/voiceChangeModel", data=short).get_data(as_text=True).startswith("sample is shorter")


def test_startup_errors_exit_1_with_a_message(ws: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ws)
    assert flask_api.main(["-m", "logs/44k/G_9.pth", "-c", "logs/44k/config.json"]) == 1
    assert "model logs/44k/G_9.pth not found; logs/44k has G_1.pth" in capsys.readouterr().err
    assert flask_api_full_song.main([*MODEL, "-cr", "0.5"]) == 1
    assert "cluster ratio 0.5 given but" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert serve(Flask("x"), "127.0.0.1", busy.getsockname()[1]) == 1
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
    assert flask_api.build_parser().parse_args([]).port == 6842 and flask_api.build_parser().parse_args([]).host \
        == "127.0.0.1"
    assert flask_api_full_song.build_parser().parse_args([]).port == 1145


def test_fifo_lock_serves_in_arrival_order() -> None:
    lock, order = FifoLock(), []

    def worker(i: int) -> None:
        with lock:
            order.append(i)

    threads = []
    with lock:  # everyone queues while the lock is held, in a known order
        for i in range(6):
            threads.append(threading.Thread(target=worker, args=(i,)))
            threads[-1].start()
            while lock._next != i + 2:
                time.sleep(0.001)
    for t in threads:
        t.join()
    assert order == list(range(6))


def test_vst_server_keeps_the_kernel_cache(monkeypatch) -> None:
    # Every chunk of a stream has one length: the VST server keeps oneDNN's built convolutions (song conversion
    # turns that cache off), and a user's own setting wins.
    from inference import serving

    seen = []
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setattr(serving, "run_server",
                        lambda args, build: seen.append(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")) or 0)
    assert flask_api.main(["-m", "G.pth", "-c", "config.json"]) == 0
    assert seen == ["1024"]
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")
    assert flask_api.main(["-m", "G.pth", "-c", "config.json"]) == 0
    assert seen == ["1024", "7"]
