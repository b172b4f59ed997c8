"""modules/slicer.py against the 4.1 slicer fixtures (chunk dicts, RMS frames, chunks2audio sums)."""
from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES
from modules.slicer import ArraySource, Chunk, FileSource, Slicer, chunks2audio, cut, rms_frames, slice_source

SLICER = FIXTURES / "slicer"


@pytest.fixture(scope="module")
def cases() -> dict:
    path = SLICER / "slicer_cases.json"
    if not path.exists():
        pytest.skip("slicer fixtures not available")
    return json.loads(path.read_text())["cases"]


@pytest.fixture(scope="module")
def rms_ref() -> dict[str, np.ndarray]:
    with np.load(SLICER / "slicer_rms.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _cut_args(call: str) -> tuple[int, int]:
    db = int(call.split("db_thresh=")[1].split(",")[0])
    min_len = int(call.split("min_len=")[1].rstrip(")"))
    return db, min_len


def _cut_cases(cases: dict) -> list[str]:
    return [k for k, v in cases.items() if v["call"].startswith("cut(") and "legacy" not in k and "error" not in v]


def test_cut_matches_every_fixture_case(cases: dict) -> None:
    names = _cut_cases(cases)
    assert len(names) >= 14
    for name in names:
        case = cases[name]
        assert cut(SLICER / case["file"], *_cut_args(case["call"])) == case["chunks"], name


def test_rms_frames_are_bit_exact(cases: dict, rms_ref: dict) -> None:
    for name, case in cases.items():
        if "rms_frames" not in case or "legacy" in name:
            continue
        with FileSource(SLICER / case["file"]) as src:
            samples = src.read(0, src.n_samples)
        got = rms_frames(samples, **case["rms_call_kwargs"])
        np.testing.assert_array_equal(got, rms_ref[case["rms_frames"]][0], err_msg=name)


def test_chunks2audio_parts_match(cases: dict) -> None:
    for name in _cut_cases(cases):
        case = cases[name]
        path = SLICER / case["file"]
        parts, sr = chunks2audio(path, case["chunks"])
        ref = case["chunks2audio"]
        assert sr == ref["sample_rate"]
        assert len(parts) == ref["n_parts"], name
        for (silent, audio), want in zip(parts, ref["parts"]):
            assert silent == want["slice"] and audio.dtype == np.float32
            assert len(audio) == want["n_samples"]
            assert float(np.sum(audio, dtype=np.float64)) == pytest.approx(want["sum_float64"], abs=1e-9)
            assert float(np.abs(audio).sum(dtype=np.float64)) == pytest.approx(want["abs_sum_float64"], rel=1e-12)
        assert sum(len(a) for _, a in parts) == case["chunks2audio_total_samples"]


def test_streaming_slicer_equals_cut_without_empty_chunks(cases: dict) -> None:
    for name in _cut_cases(cases):
        case = cases[name]
        with FileSource(SLICER / case["file"]) as src:
            got = slice_source(src, *_cut_args(case["call"]))
        want = []
        for v in case["chunks"].values():
            a, b = map(int, v["split_time"].split(","))
            if a != b:
                want.append(Chunk(a, b, v["slice"]))
        assert got == want, name


def test_array_source_gives_the_same_chunks(cases: dict) -> None:
    case = cases["stereo_16k__db-40__minlen500"]
    stereo, sr = sf.read(SLICER / case["file"], dtype="float32")
    assert stereo.ndim == 2
    chunks = slice_source(ArraySource(stereo, sr), -40, 500)
    assert [(c.start, c.end, c.silent) for c in chunks] == [(0, 29120, False), (29120, 56000, False)]


def test_slicer_class_with_custom_parameters(cases: dict) -> None:
    for name, case in cases.items():
        if not name.startswith("Slicer__"):
            continue
        kwargs = ast.literal_eval(case["call"].split("**")[1].split(").slice")[0])
        samples, sr = sf.read(SLICER / case["file"], dtype="float32")
        slicer = Slicer(sr, **kwargs)
        derived = case["derived"]
        assert (slicer.hop_size, slicer.win_size, slicer.min_length, slicer.min_interval, slicer.max_sil_kept) == (
            derived["hop_size"], derived["win_size"], derived["min_length"], derived["min_interval"],
            derived["max_sil_kept"])
        assert slicer.threshold == pytest.approx(derived["threshold_linear"])
        assert slicer.slice(samples) == case["chunks"], name


def test_invalid_parameters_raise_the_4_1_error(cases: dict) -> None:
    case = cases["main__db-40__minlen100"]
    with pytest.raises(ValueError, match="min_length >= min_interval >= hop_size") as err:
        cut(SLICER / case["file"], *_cut_args(case["call"]))
    assert str(err.value) == case["error"]["message"]


def test_sources_read_zeros_outside_the_signal() -> None:
    src = ArraySource(np.arange(1, 6, dtype=np.float32), 16000)
    np.testing.assert_array_equal(src.read(-2, 3), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(src.read(3, 8), [4, 5, 0, 0, 0])
