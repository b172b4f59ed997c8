"""What the HTTP servers (`flask_api.py`, `flask_api_full_song.py`) share: model flags and loading, request
checks that answer 400 with a one-line reason, conversions one at a time in arrival order, a log line per
request, and the waitress WSGI server. Flask and waitress are imported only when a server is built.
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from inference.command import default_cluster_path
from modules.F0Predictor import F0_PREDICTORS

if TYPE_CHECKING:
    from flask import Flask, Response

    from inference.infer_tool import Svc

__all__ = ["BadRequest", "FifoLock", "RATES", "add_model_arguments", "audio_reply", "form_file", "load_svc",
           "make_app", "number", "read_audio", "run_server", "sample_rate", "serve", "speaker"]

logger = logging.getLogger(__name__)
# Sample rates accepted for uploads and replies: what audio interfaces and files use. An arbitrary rate
# would make the resampling kernel (rates reduced by their gcd) absurdly large.
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
THREADS = 4  # waitress workers: bad requests are answered while a conversion holds the model


class BadRequest(ValueError):
    """The request cannot be served as sent: HTTP 400 with this message."""


class FifoLock:
    """A lock handed out in the order it was asked for (threading.Lock promises no order), so that the
    chunks of a stream are converted in the order they arrived."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = self._serving = 0

    def __enter__(self) -> None:
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def add_model_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    """-m -c -cm -cr -f0p -d --host --port."""
    add = parser.add_argument
    add("-m", "--model_path", default="logs/44k/G_37600.pth", help="So-VITS checkpoint (full or compressed)")
    add("-c", "--config_path", default="logs/44k/config.json", help="config.json of the model")
    add("-cm", "--cluster_model_path", default="",
        help="k-means model or feature index for -cr; empty = logs/44k/kmeans_10000.pt")
    add("-cr", "--cluster_infer_ratio", type=float, default=0, help="share of clustering / feature retrieval, 0-1")
    add("-f0p", "--f0_predictor", default="fcpe", choices=F0_PREDICTORS, help="F0 predictor")
    add("-d", "--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network interface)")
    add("--port", type=int, default=port, help="TCP port")


def load_svc(args: argparse.Namespace) -> "Svc | None":
    """The model the flags name, or None after printing why it cannot be loaded."""
    from core.checkpoint import CheckpointError
    from inference.infer_tool import Svc, SvcError

    if not 0 <= args.cluster_infer_ratio <= 1:
        print(f"error: -cr must be between 0 and 1, got {args.cluster_infer_ratio}", file=sys.stderr)
        return None
    try:
        cluster = args.cluster_model_path or (default_cluster_path() if args.cluster_infer_ratio else "")
        svc = Svc(args.model_path, args.config_path, args.device, cluster)
        svc.check_cluster(args.cluster_infer_ratio)
        return svc
    except (CheckpointError, SvcError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def number(form: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """Form field `name` as a float in [low, high] (`default` when absent)."""
    text = form.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {text[:40]!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {text[:40]}")
    return value


def sample_rate(form: Mapping[str, str], name: str, default: int) -> int:
    """Form field `name` as one of RATES (`default` when absent)."""
    text = form.get(name) or str(default)
    try:
        rate = float(text)
    except ValueError:
        rate = 0
    if rate not in RATES:
        raise BadRequest(f"{name} must be one of {', '.join(map(str, RATES))} Hz, got {text[:40]}")
    return int(rate)


def speaker(svc: "Svc", text: str | None, by_name: bool) -> str | int:
    """The speaker a form field names: an index into the model's speakers, or with `by_name` also a name."""
    from inference.infer_tool import SvcError

    text = (text or "0").strip()
    try:
        value: str | int = int(float(text)) if float(text).is_integer() else text
    except ValueError:
        value = text
    if isinstance(value, str) and not by_name:
        raise BadRequest(f"the speaker must be an index 0-{len(svc.spk2id) - 1}, got {text[:40]!r}")
    try:
        svc.speaker_id(value)
    except SvcError:
        names = ", ".join(f"{i}={n}" for n, i in svc.spk2id.items())
        raise BadRequest(f"unknown speaker {text[:40]!r}; this model has {names}") from None
    return value


def read_audio(data: bytes, what: str, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode an uploaded sound file: (mono float32 [n], its rate); BadRequest when it is not audio, holds no
    samples or non-finite ones, has a rate outside RATES or lasts longer than `max_seconds`."""
    from modules.slicer import FileSource
    from modules.audio_io import AudioReadError

    try:
        with FileSource(io.BytesIO(data)) as source:
            if source.sample_rate not in RATES:
                raise BadRequest(f"{what} has a sample rate of {source.sample_rate} Hz; use one of "
                                 f"{', '.join(map(str, RATES))}")
            if source.n_samples == 0:
                raise BadRequest(f"{what} holds no audio samples")
            if source.n_samples > max_seconds * source.sample_rate:
                raise BadRequest(f"{what} lasts {source.n_samples / source.sample_rate:.2f} s; "
                                 f"the limit is {max_seconds:g} s")
            source.name = what
            return source.read(0, source.n_samples), source.sample_rate
    except AudioReadError as err:
        raise BadRequest(f"{what}: {err.reason.split(' (')[0]}") from None


def audio_reply(samples: np.ndarray, rate: int, fmt: str) -> "Response":
    """A sound file attachment `temp.<fmt>` (as 4.1 names it), clipped to [-1, 1]."""
    import soundfile as sf
    from flask import send_file

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1, 1), rate, format=fmt.upper())
    buffer.seek(0)
    return send_file(buffer, mimetype=f"audio/{fmt.lower()}", as_attachment=True, download_name=f"temp.{fmt}")


def make_app(name: str, max_body_mib: int) -> "Flask":
    """A Flask app answering BadRequest and over-size bodies with 400, any other failure with 500, both as
    one line of text, and logging one line per request with its latency."""
    from flask import Flask, g, request
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_body_mib << 20

    @app.before_request
    def start_clock() -> None:
        g.start = time.perf_counter()

    @app.after_request
    def log_request(response: "Response") -> "Response":
        logger.info("%s %s %d %d B in %.3f s", request.method, request.path, response.status_code,
                    response.content_length or 0, time.perf_counter() - g.get("start", time.perf_counter()))
        return response

    @app.errorhandler(BadRequest)
    def bad_request(err: BadRequest) -> tuple[str, int]:
        return f"{err}\n", 400

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge) -> tuple[str, int]:
        return f"request body over the {max_body_mib} MiB limit\n", 400

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[str, int]:
        return f"{err.name}: {err.description}\n", err.code or 500

    @app.errorhandler(Exception)
    def failed(err: Exception) -> tuple[str, int]:
        logger.exception("%s %s failed", request.method, request.path)
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"conversion failed: {reason}\n", 500

    return app


def serve(app: "Flask", host: str, port: int) -> int:
    """Serve `app` with waitress until interrupted; 1 with a message when the address cannot be used."""
    from waitress import serve as waitress_serve

    logger.info("serving on http://%s:%d", host, port)
    try:
        waitress_serve(app, host=host, port=port, threads=THREADS, ident="so-vits-svc")
    except OSError as err:
        print(f"error: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def form_file(files: Mapping, name: str) -> bytes:
    """The bytes of uploaded file `name`; BadRequest when the request has none."""
    upload = files.get(name)
    if upload is None:
        raise BadRequest(f"the request has no {name!r} file (multipart/form-data field)")
    return upload.read()


def run_server(args: argparse.Namespace, build: Callable[["Svc", argparse.Namespace], "Flask"]) -> int:
    """Configure logging, load the model the flags name, build the app with `build(svc, args)` and serve it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    svc = load_svc(args)
    return 1 if svc is None else serve(build(svc, args), args.host, args.port)
