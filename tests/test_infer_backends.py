"""The opt-in generator backends of `Svc` (ONNX Runtime, bf16) and the process tuning of core/runtime.py,
on the tiny real model of test_infer_tool.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import inference_main
from core import runtime
from export import onnx as onnx_export
from inference.infer_tool import Svc, SvcError
from test_infer_tool import build_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("backends"))


def _svc(ws: Path, config: str = "logs/44k/config.json", **options) -> Svc:
    return Svc(ws / "logs/44k/G_1.pth", ws / config, "cpu", cluster_model_path="", pretrain_dir=ws / "pretrain",
               **options)


@pytest.fixture(scope="module")
def reference(ws: Path) -> np.ndarray:
    return _svc(ws).slice_inference(ws / "raw/gapped.wav", "speaker0", 2)


@pytest.mark.slow
def test_onnx_backend_matches_pytorch_and_caches_its_graph(ws: Path, reference: np.ndarray, monkeypatch) -> None:
    svc = _svc(ws, onnx=True)
    graph = svc.synthesizer.path
    assert graph.parent == ws / "logs/44k" and graph.name.startswith("G_1.ort-") and graph.is_file()
    audio = svc.slice_inference(ws / "raw/gapped.wav", "speaker0", 2)
    assert audio.shape == reference.shape and float(np.abs(reference).max()) > 0.01
    assert float(np.abs(audio - reference).max()) <= 1e-4
    # The next load reuses the cached graph instead of exporting again.
    monkeypatch.setattr(onnx_export, "export_infer_graph", lambda *a: pytest.fail("exported again"))
    assert _svc(ws, onnx=True).synthesizer.path == graph
    monkeypatch.undo()
    # Another config for the same model file is another graph; the stale one is removed.
    cfg = json.loads((ws / "logs/44k/config.json").read_text())
    cfg["spk"]["renamed"] = cfg["spk"].pop("speaker0")
    (ws / "logs/44k/config2.json").write_text(json.dumps(cfg))
    other = _svc(ws, "logs/44k/config2.json", onnx=True).synthesizer.path
    assert other != graph and other.is_file() and not graph.exists()


def test_onnx_backend_falls_back_for_f0_prediction(ws: Path) -> None:
    svc = _svc(ws)
    backend = onnx_export.OnnxSynthesizer.__new__(onnx_export.OnnxSynthesizer)  # no session: it must not be used
    backend.net = svc.net_g_ms
    c, f0, uv = torch.randn(1, 48, 30), torch.full((1, 30), 220.0), torch.ones(1, 30)
    g = torch.LongTensor([[0]])
    with torch.inference_mode():
        expected = svc.net_g_ms.infer(c, f0, uv, g=g, predict_f0=True)
        got = backend.infer(c, f0, uv, g=g, predict_f0=True)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_graph_cache_key_follows_model_and_config(tmp_path: Path) -> None:
    model, config = tmp_path / "G_5.pth", tmp_path / "config.json"
    model.write_bytes(b"weights")
    config.write_text("{}")
    first = onnx_export.cached_graph_path(model, config)
    assert first.parent == tmp_path and first.name.startswith("G_5.ort-") and first.suffix == ".onnx"
    assert onnx_export.cached_graph_path(model, config) == first
    config.write_text('{"spk": {}}')
    second = onnx_export.cached_graph_path(model, config)
    model.write_bytes(b"weights2")
    assert len({first, second, onnx_export.cached_graph_path(model, config)}) == 3


def test_bf16_is_refused_without_native_bf16(ws: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(SvcError, match=r"--bf16 refused: this CPU has no native bf16 \(AVX512-BF16 or AMX"):
        _svc(ws, bf16=True)


def test_bf16_needs_a_gpu_with_native_bf16(monkeypatch) -> None:
    """A T4 (compute capability 7.5) only emulates bf16, which torch.cuda.is_bf16_supported() counts as support."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    gpu = SimpleNamespace(name="Tesla T4", major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: gpu)
    assert runtime.bf16_problem(torch.device("cuda:0")) == \
        "Tesla T4 (compute capability 7.5) has no native bf16 (8.0+ has)"
    gpu.name, gpu.major, gpu.minor = "NVIDIA A100", 8, 0
    assert runtime.bf16_problem(torch.device("cuda:0")) is None


def test_bf16_runs_where_the_cpu_has_it(ws: Path, reference: np.ndarray) -> None:
    if runtime.bf16_problem(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    audio = _svc(ws, bf16=True).slice_inference(ws / "raw/gapped.wav", "speaker0", 2)
    diff = float(np.abs(audio - reference).max())
    assert audio.shape == reference.shape and 0 < diff < 0.1


def test_inference_main_flags_reach_svc(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    class Stop(SvcError):
        pass

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise Stop("stop here")

    monkeypatch.setattr("inference.infer_tool.Svc", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.wav").write_bytes(b"")  # not read: Svc comes first
    assert inference_main.main(["-n", "a.wav", "--onnx", "--bf16"]) == 1
    assert seen == {"onnx": True, "bf16": True}
    assert inference_main.build_parser().parse_args([]).onnx is False


def test_allocator_tuning_and_heap_release(monkeypatch) -> None:
    if runtime._glibc() is None:
        pytest.skip("not glibc")
    monkeypatch.setenv("SOVITS_PLAIN", "1")
    assert not runtime.tune_allocator() and not runtime.fast_paths()
    monkeypatch.delenv("SOVITS_PLAIN")
    assert runtime.tune_allocator()
    # oneDNN's cache of built convolutions is off: it grew with every new slice length
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"
    with torch.no_grad():
        assert runtime.fast_paths()
    assert not runtime.fast_paths()  # autograd on: no in-place shortcuts

    def rss_mib() -> float:
        return runtime_status_kib() / 1024

    blocks = [torch.ones(2 << 20) for _ in range(40)]  # 40 x 8 MiB from the heap (under the mmap threshold)
    held = rss_mib()
    del blocks
    kept = rss_mib()  # the heap keeps freed memory (trim threshold 1 GiB)
    runtime.release_memory()
    released = rss_mib()
    assert held - kept < 100 and kept - released > 250, (held, kept, released)


def runtime_status_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_onnx_backend_with_volume_embedding(tmp_path: Path) -> None:
    from bench.synth_infer import TINY_MODEL, BenchConfig, build_model, make_inputs

    cfg = BenchConfig(1025, 20, {**TINY_MODEL, "sampling_rate": 44100, "vol_embedding": True}, 44100, 512)
    net = build_model(cfg)
    net.remove_weight_norm()
    c, f0, uv, g = make_inputs(cfg, 0.5)
    vol = torch.rand(1, c.size(2), generator=torch.Generator().manual_seed(3))
    (tmp_path / "G_9.pth").write_bytes(b"model")
    (tmp_path / "config.json").write_text("{}")
    backend = onnx_export.OnnxSynthesizer(net, tmp_path / "G_9.pth", tmp_path / "config.json", threads=1)
    assert [i.name for i in backend.session.get_inputs()][-1] == "vol"
    with torch.inference_mode():
        expected = net.infer(c, f0, uv, g=g, noice_scale=0.4, vol=vol)[0]
    audio = backend.infer(c, f0, uv, g=g, noice_scale=0.4, vol=vol)[0]
    assert float(expected.abs().max()) > 1e-3 and float((audio - expected).abs().max()) <= 1e-4
