"""Live conversion speed: the VST server (`flask_api.py`) over real HTTP on localhost, chunk by chunk.

For each model size (tiny and default config, seeded random weights, one speaker, full-size random
ContentVec: infer_e2e's `build_project`) and each thread count, the server is started as a subprocess
(`OMP_NUM_THREADS`, crossfaded mode, FCPE) and sent a voice cut into consecutive chunks of 0.3, 0.5 and
1.0 s, one request after the other as a plugin does. Latency = wall time from sending a request to
having the whole reply; RTF = median latency / chunk length (below 1: it keeps up with the audio); CPU s /
chunk = the server process's CPU time per request (all threads; steadier than wall time on a shared
machine). The first two requests of each chunk length are warm-up and not counted.

Run from the repository root::

    .venv/bin/python bench/realtime.py [--requests 20] [--threads 1,2] [--configs tiny,default]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import SHARED, load_average, machine_description, markdown_table  # noqa: E402

CONFIGS = {"tiny": ROOT / "configs_template" / "config_tiny_template.json",
           "default": ROOT / "configs_template" / "config_template.json"}
CLIP = SHARED / "data" / "edge" / "long_slt_60s.wav"
CHUNKS = (0.3, 0.5, 1.0)
WARM_UP = 2
HEADER = ("config", "threads", "chunk s", "n", "p50 s", "p95 s", "max s", "RTF", "CPU s / chunk", "p95 < chunk")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:<port>
    log: Path  # its stdout and stderr
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_server(script: str, args: Sequence[str], cwd: Path, threads: int | None = None,
                   timeout: float = 180) -> Iterator[Server]:
    """Start `python <script> <args> --port <free>` in `cwd`; yields it once it listens, and stops it
    afterwards. RuntimeError with its log when it exits or does not listen within `timeout`."""
    port, log = free_port(), cwd / f"{Path(script).stem}_{uuid.uuid4().hex[:6]}.log"
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / script), *args, "--port", str(port)], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{script} did not start:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        yield Server(f"http://127.0.0.1:{port}", log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_form(url: str, fields: Mapping[str, str], files: Mapping[str, bytes] | None = None,
              timeout: float = 300) -> tuple[int, bytes]:
    """POST a multipart/form-data request; (HTTP status, body), error statuses included."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.wav"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
              for k, data in (files or {}).items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class Row:
    config: str
    threads: int
    chunk_s: float
    latencies: list[float]
    cpu_s: float  # server CPU seconds per timed request

    def cells(self) -> tuple:
        lat = sorted(self.latencies)
        p95 = lat[min(len(lat) - 1, int(np.ceil(0.95 * len(lat))) - 1)]
        p50 = statistics.median(lat)
        return (self.config, self.threads, f"{self.chunk_s:g}", len(lat), f"{p50:.3f}", f"{p95:.3f}",
                f"{lat[-1]:.3f}", f"{p50 / self.chunk_s:.2f}", f"{self.cpu_s:.3f}",
                "yes" if p95 < self.chunk_s else "no")


def measure(server: Server, name: str, threads: int, voice: np.ndarray, rate: int, chunk_s: float,
            requests: int) -> Row:
    """Latencies of `requests` consecutive chunks (after WARM_UP more); each reply is checked."""
    n = int(round(chunk_s * rate))
    latencies, cpu_start = [], 0.0
    for i in range(WARM_UP + requests):
        if i == WARM_UP:
            cpu_start = server.cpu_seconds()
        start = (i * n) % (len(voice) - n)
        data = wav_bytes(voice[start:start + n], rate)
        began = time.perf_counter()
        status, body = post_form(f"{server.url}/voiceChangeModel", {"fPitchChange": "0", "sampleRate": str(rate),
                                                             "sSpeakId": "0"}, {"sample": data})
        seconds = time.perf_counter() - began
        if status != 200 or sf.info(io.BytesIO(body)).frames != n:
            raise RuntimeError(f"bad reply ({status}): {body[:200]!r}")
        if i >= WARM_UP:
            latencies.append(seconds)
    return Row(name, threads, chunk_s, latencies, (server.cpu_seconds() - cpu_start) / requests)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="timed requests per chunk length")
    parser.add_argument("--threads", default="1,2", help="comma-separated OMP_NUM_THREADS values")
    parser.add_argument("--configs", default="tiny,default", help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--chunks", default=",".join(map(str, CHUNKS)), help="chunk lengths in seconds")
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    args.configs = args.configs.split(",")
    args.chunks = [float(c) for c in args.chunks.split(",")]
    if unknown := set(args.configs) - set(CONFIGS):
        parser.error(f"unknown config(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONFIGS)}")
    if args.requests < 1 or min(args.threads) < 1 or min(args.chunks) <= 0:
        parser.error("--requests and --threads must be >= 1, --chunks > 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    import torch

    from bench.infer_e2e import build_project

    args = parse_args(argv)
    print(machine_description(torch.device("cpu")), flush=True)
    voice, rate = sf.read(CLIP, dtype="float32")
    rows = []
    for name in args.configs:
        with tempfile.TemporaryDirectory(prefix="bench_realtime_") as tmp:
            workdir = Path(tmp)
            model, config = build_project(workdir, CONFIGS[name])
            for threads in args.threads:
                load = load_average()
                with running_server("flask_api.py", ["-m", str(model), "-c", str(config)], workdir, threads) \
                        as server:
                    for chunk_s in args.chunks:
                        rows.append(measure(server, name, threads, voice, rate, chunk_s, args.requests))
                        print(markdown_table(HEADER, [rows[-1].cells()]).splitlines()[-1],
                              f"(load average {load} -> {load_average()})", flush=True)
    print(markdown_table(HEADER, [r.cells() for r in rows]))
    return rows


if __name__ == "__main__":
    main()
