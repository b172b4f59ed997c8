"""How soon `python webUI.py` serves its page, against the floor set by Python and by importing gradio.

    .venv/bin/python bench/webui_start.py [--repeats 5]

Each run starts a fresh process; the three kinds are taken in turns (round robin) and reported as medians:
`python -c pass`, `python -c "import gradio"`, and `python webUI.py` until GET / answers 200.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import ROOT, load_average, machine_description

ENV = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")


def run_to_exit(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    return time.perf_counter() - start


def page_served(folder: str) -> float:
    """Seconds from starting webUI.py (in an empty project folder) to the first 200 for GET /."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "webUI.py"), "--port", str(port)], cwd=folder, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("webUI.py exited before serving") from None
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    print(machine_description(torch.device("cpu")))
    kinds = {"python -c pass": lambda _: run_to_exit("pass"),
             "python -c 'import gradio'": lambda _: run_to_exit("import gradio"),
             "webUI.py: GET / answers 200": page_served}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, measure in kinds.items():
                times[name].append(measure(folder))
    base = statistics.median(times["python -c 'import gradio'"])
    print(f"load average after: {load_average()}\n\n| start | median s | min s | / import gradio |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
