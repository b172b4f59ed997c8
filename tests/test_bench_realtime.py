"""Smoke run of bench/realtime.py: a tiny model and tiny ContentVec behind the real flask_api.py server,
two timed requests per chunk length; the figures are consistent and every reply was checked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import preprocess, realtime
from test_bench_preprocess import TINY_CONTENTVEC
from test_bench_synth_infer import TINY_MODEL


@pytest.mark.slow
def test_main_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if not realtime.CLIP.exists():
        pytest.skip("reference clip data/edge/long_slt_60s.wav not available")
    raw = json.loads(realtime.CONFIGS["tiny"].read_text())
    raw["model"] = {**TINY_MODEL, "ssl_dim": 32}  # the tiny ContentVec gives 32-dim units
    config = tmp_path / "smoke.json"
    config.write_text(json.dumps(raw))
    monkeypatch.setattr(preprocess, "CONTENTVEC_BASE", TINY_CONTENTVEC)
    monkeypatch.setitem(realtime.CONFIGS, "tiny", config)
    rows = realtime.main(["--configs", "tiny", "--threads", "1", "--requests", "2", "--chunks", "0.3,0.5"])
    assert [(r.config, r.threads, r.chunk_s, len(r.latencies)) for r in rows] == [("tiny", 1, 0.3, 2),
                                                                                    ("tiny", 1, 0.5, 2)]
    for row in rows:
        cells = row.cells()
        assert 0 < float(cells[4]) <= float(cells[5]) <= float(cells[6])  # p50 <= p95 <= max
        assert float(cells[7]) == pytest.approx(float(cells[4]) / row.chunk_s, abs=0.01)
        assert row.cpu_s > 0
    out = capsys.readouterr().out
    assert "load average" in out and "| tiny | 1 | 0.5 | 2 |" in out


def test_flags() -> None:
    args = realtime.parse_args([])
    assert (args.configs, args.threads, args.chunks, args.requests) == (["tiny", "default"], [1, 2],
                                                                         [0.3, 0.5, 1.0], 20)
    for argv in (["--configs", "huge"], ["--threads", "0"], ["--chunks", "0"], ["--requests", "0"]):
        with pytest.raises(SystemExit):
            realtime.parse_args(argv)
