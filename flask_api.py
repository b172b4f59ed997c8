"""The server the so-vits-svc VST plugin talks to: live conversion of the chunks a DAW sends.

    python flask_api.py -m logs/44k/G_30400.pth -c configs/config.json [--raw] [--port 6842]

POST /voiceChangeModel, multipart form: `sample` (a WAV chunk), `fPitchChange` (semitones), `sampleRate`
(the DAW's rate; the reply is resampled to it), `sSpeakId` (speaker index). The reply is a WAV attachment
as long as the chunk. Chunks go through one stream (inference/streaming.py): crossfaded with the previous
chunk (the output runs the crossfade behind), or with --raw each converted on its own (4.1's raw_infer).
"""
from __future__ import annotations

import argparse
import sys

from flask import Flask, request

from core.runtime import keep_kernel_cache
from inference import serving
from inference.infer_tool import Svc
from inference.options import MAX_TRANSPOSE

MAX_BODY_MIB = 8  # one chunk: 5 s of 192 kHz stereo 32-bit audio is 7.3 MiB
MAX_CHUNK_SECONDS = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving.add_model_arguments(p, port=6842)
    p.add_argument("--raw", action="store_true", help="convert each chunk on its own (no context, no crossfade; "
                   "the lowest compute, seams may click)")
    return p


def create_app(svc: Svc, args: argparse.Namespace) -> Flask:
    """The VST endpoint on one stream of `svc`, converting one request at a time in arrival order."""
    from inference.streaming import StreamConverter

    stream = StreamConverter(svc, args.f0_predictor, args.cluster_infer_ratio, raw=args.raw)
    app = serving.make_app(__name__, MAX_BODY_MIB)
    lock = serving.FifoLock()

    @app.post("/voiceChangeModel")
    def voice_change_model():
        form = request.form
        chunk, rate = serving.read_audio(serving.form_file(request.files, "sample"), "sample", MAX_CHUNK_SECONDS)
        if len(chunk) * stream.sample_rate < stream.min_samples * rate:
            raise serving.BadRequest(f"sample is shorter than {stream.min_samples / stream.sample_rate:.3f} s")
        tran = serving.number(form, "fPitchChange", 0.0, -MAX_TRANSPOSE, MAX_TRANSPOSE)
        out_rate = serving.sample_rate(form, "sampleRate", rate)
        spk = serving.speaker(svc, form.get("sSpeakId"), by_name=False)
        with lock:
            out = stream.process_at(chunk, rate, spk, tran, out_rate)
        return serving.audio_reply(out, out_rate, "wav")

    return app


def main(argv: list[str] | None = None) -> int:
    keep_kernel_cache()  # every chunk of a stream has one length: the built convolutions are reused
    return serving.run_server(build_parser().parse_args(argv), create_app)


if __name__ == "__main__":
    sys.exit(main())
