"""A server converting whole songs, with the options of the tutorial's conversion command.

    python flask_api_full_song.py -m logs/44k/G_30400.pth -c configs/config.json [--port 1145]

POST /wav2wav, multipart form: the song as an uploaded file `audio`, or `audio_path`, a file inside raw/
on the server (4.1's field; a path outside raw/ is refused); `tran` (semitones), `spk` (speaker name or
index), `wav_format` (wav, flac, ogg, ...). The reply is the converted song, `temp.<wav_format>`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from flask import Flask, request

from inference import serving
from inference.infer_tool import Svc
from inference.options import MAX_TRANSPOSE, InferOptions

MAX_BODY_MIB = 64  # about 6 minutes of 44.1 kHz stereo 16-bit WAV
MAX_SONG_SECONDS = 600.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving.add_model_arguments(p, port=1145)
    return p


def song_bytes() -> tuple[bytes, str]:
    """(file bytes, name for messages) of the uploaded `audio`, or of `audio_path` when it lies inside raw/."""
    if "audio" in request.files:
        return serving.form_file(request.files, "audio"), "audio"
    text = request.form.get("audio_path")
    if not text:
        raise serving.BadRequest("send the song as an 'audio' file, or name a file inside raw/ in 'audio_path'")
    raw = Path("raw").resolve()
    path = Path(text).resolve()
    if not path.is_relative_to(raw) or not path.is_file():
        raise serving.BadRequest(f"audio_path must name a file inside raw/ (e.g. raw/song.wav), got {text[:80]!r}")
    return path.read_bytes(), text


def create_app(svc: Svc, args: argparse.Namespace) -> Flask:
    """/wav2wav on `svc`, converting one song at a time in arrival order."""
    app = serving.make_app(__name__, MAX_BODY_MIB)
    lock = serving.FifoLock()

    @app.post("/wav2wav")
    def wav2wav():
        form = request.form
        data, name = song_bytes()
        song = serving.read_audio(data, name, MAX_SONG_SECONDS)
        tran = serving.number(form, "tran", 0.0, -MAX_TRANSPOSE, MAX_TRANSPOSE)
        spk = serving.speaker(svc, form.get("spk"), by_name=True)
        fmt = form.get("wav_format") or "wav"
        if fmt.upper() not in sf.available_formats():
            raise serving.BadRequest(f"unknown wav_format {fmt[:20]!r}; e.g. wav, flac, ogg")
        opts = InferOptions(tran=tran, f0_predictor=args.f0_predictor, cluster_infer_ratio=args.cluster_infer_ratio)
        with lock:
            out = np.concatenate(list(svc.iter_slice_inference(song, spk, opts)))
        return serving.audio_reply(out, svc.target_sample, fmt)

    return app


def main(argv: list[str] | None = None) -> int:
    return serving.run_server(build_parser().parse_args(argv), create_app)


if __name__ == "__main__":
    sys.exit(main())
