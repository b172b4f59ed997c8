"""pm / dio / harvest and the shared F0 post-processing against the 4.1 fixtures.

Sources: the ``utils`` fixture (f0pp_*, predictor_*) and the ``f0`` fixture (pm/dio/harvest cases,
pp__* post-processing cases). End-to-end predictor numbers depend on the native libraries; they
were recorded with pyworld 0.3.5 and praat-parselmouth 0.4.7 and are compared only with those.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_fixture
from modules.F0Predictor import F0_PREDICTORS, get_f0_predictor
from modules.F0Predictor.DioF0Predictor import DioF0Predictor
from modules.F0Predictor.F0Predictor import F0Predictor, finish_f0, post_process, resize_f0
from modules.F0Predictor.HarvestF0Predictor import HarvestF0Predictor
from modules.F0Predictor.PMF0Predictor import PMF0Predictor

ROOT = Path(__file__).resolve().parents[1]
PP_ATOL = 1e-9  # README_synth: F0 post-processing is float64 numpy math, ~1e-9
LIB_ATOL = 1e-6  # README f0/: same library versions -> exact or 1e-6
RECORDED_VERSIONS = {"pyworld": "0.3.5", "praat-parselmouth": "0.4.7"}
NEEDS = {"pm": "praat-parselmouth", "dio": "pyworld", "harvest": "pyworld"}


def _check(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def _same_library(name: str) -> None:
    package = NEEDS[name]
    if version(package) != RECORDED_VERSIONS[package]:
        pytest.skip(f"{name} fixture recorded with {package} {RECORDED_VERSIONS[package]}")


@pytest.fixture(scope="module")
def utils_fx() -> tuple[dict, dict[str, np.ndarray]]:
    return load_fixture("utils")


@pytest.fixture(scope="module")
def f0_fx() -> tuple[dict, dict[str, np.ndarray]]:
    folder = FIXTURES / "f0"
    if not (folder / "f0_outputs.npz").exists():
        pytest.skip(f"fixture {folder} not available")
    with np.load(folder / "f0_outputs.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads((folder / "f0_cases.json").read_text()), arrays


def _pp_cases(meta: dict) -> list[tuple[int, int]]:
    return [(i, n) for i, targets in enumerate(meta["f0_post_process_targets"]) for n in targets]


@pytest.mark.parametrize("name", ["pm", "dio", "harvest"])
def test_interpolate_f0_matches_fixture(utils_fx, name: str) -> None:
    meta, arrays = utils_fx
    predictor = get_f0_predictor(name)
    for i in range(len(meta["f0_post_process_targets"])):
        f0, vuv = predictor.interpolate_f0(arrays[f"f0pp_{i}_raw"])
        _check(f0, arrays[f"f0pp_{i}_{name}_interpolate_f0"], PP_ATOL)
        _check(vuv, arrays[f"f0pp_{i}_{name}_interpolate_vuv"], 0)


def test_resize_f0_and_then_interpolate_match_fixture(utils_fx) -> None:
    meta, arrays = utils_fx
    dio = DioF0Predictor()
    for i, n in _pp_cases(meta):
        resized = dio.resize_f0(arrays[f"f0pp_{i}_raw"], n)
        _check(resized, arrays[f"f0pp_{i}_resize_f0_{n}"], PP_ATOL)
        f0, vuv = dio.interpolate_f0(resized)
        _check(f0, arrays[f"f0pp_{i}_resize_then_interpolate_{n}"], PP_ATOL)
        _check(vuv, arrays[f"f0pp_{i}_resize_then_interpolate_vuv_{n}"], 0)


@pytest.mark.parametrize("name", ["rmvpe", "fcpe", "crepe"])
def test_neural_post_process_matches_fixture(utils_fx, name: str) -> None:
    meta, arrays = utils_fx
    for i, n in _pp_cases(meta):
        raw = torch.from_numpy(arrays[f"f0pp_{i}_raw"]).float()
        f0, vuv = post_process(raw, n, hop_length=512, sampling_rate=44100)
        _check(f0, arrays[f"f0pp_{i}_{name}_post_process_{n}"], PP_ATOL)
        _check(vuv, arrays[f"f0pp_{i}_{name}_post_process_vuv_{n}"], 0)


def test_post_process_cases_of_f0_fixture(f0_fx) -> None:
    _, arrays = f0_fx
    pm = PMF0Predictor()
    for kind in ("mixed", "single", "zeros", "tiny_values"):
        raw = arrays[f"pp_in__{kind}"]
        f0, uv = pm.interpolate_f0(raw)
        _check(f0, arrays[f"pp__interpolate_f0__{kind}__f0"], PP_ATOL)
        _check(uv, arrays[f"pp__interpolate_f0__{kind}__uv"], 0)
        for key in [k for k in arrays if k.startswith(f"pp__resize_f0__{kind}__to")]:
            _check(resize_f0(raw, int(key.rsplit("to", 1)[1])), arrays[key], PP_ATOL)
    for key in [k for k in arrays if "_post_process__" in k and k.endswith("__f0")]:
        _, _, kind, target, _ = key.split("__")
        raw = torch.from_numpy(arrays[f"pp_in__{kind}"]).float()
        f0, uv = post_process(raw, int(target[2:]))
        expected_f0, expected_uv = arrays[key], arrays[key[: -len("f0")] + "uv"]
        # 4.1's crepe returned float32 torch tensors for all-unvoiced input; ours is numpy float32.
        np.testing.assert_allclose(f0, expected_f0, rtol=0, atol=PP_ATOL)
        np.testing.assert_array_equal(uv, expected_uv)
        assert f0.shape == expected_f0.shape


def test_post_process_single_voiced_uses_voiced_value() -> None:
    f0, vuv = post_process(np.array([0.0, 0.0, 180.0, 0.0]), 4)
    # Unlike pm/dio/harvest (constant f0[0] = 0), the voiced value fills every frame.
    np.testing.assert_array_equal(f0, np.full(4, 180.0, dtype=np.float32))
    np.testing.assert_array_equal(vuv, [0, 0, 1, 0])
    f0_classic, _ = PMF0Predictor().interpolate_f0(np.array([0.0, 0.0, 180.0, 0.0]))
    np.testing.assert_array_equal(f0_classic, np.zeros(4))


def test_finish_f0_all_unvoiced_shortcut() -> None:
    f0, uv = finish_f0(torch.zeros(30), 17)
    assert f0.dtype == np.float64 and uv.dtype == np.float64
    assert f0.shape == (17,) and uv.shape == (17,)
    assert not f0.any() and not uv.any()
    assert f0 is not uv
    raw = torch.tensor([0.0, 200.0, 210.0, 0.0, 220.0])
    for a, b in zip(finish_f0(raw, 9), post_process(raw, 9)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["pm", "dio", "harvest"])
def test_predictor_on_utils_signal(utils_fx, name: str) -> None:
    _same_library(name)
    _, arrays = utils_fx
    signal = arrays["predictor_signal"].astype(np.float64)
    f0, uv = get_f0_predictor(name, hop_length=512, sampling_rate=44100).compute_f0_uv(signal)
    assert f0.shape == (len(signal) // 512,)
    assert uv.any()  # the signal is voiced, so the comparison is not trivial
    _check(f0, arrays[f"predictor_{name}_f0"], LIB_ATOL)
    _check(uv, arrays[f"predictor_{name}_uv"], 0)


@pytest.mark.parametrize("name", ["pm", "dio", "harvest"])
def test_predictor_cases_of_f0_fixture(f0_fx, name: str) -> None:
    _same_library(name)
    meta, arrays = f0_fx
    predictor = get_f0_predictor(name, hop_length=512, sampling_rate=44100, device="cpu")
    cases = {k: v for k, v in meta["cases"].items() if k.split(".")[0] == name and "error" not in v}
    assert len(cases) >= 3
    for case_name, case in cases.items():
        wav = arrays["silence" if case_name.endswith("_silence") else "signal"]
        p_len = len(wav) // 512
        p_len += 2 if "plen+2" in case_name else -3 if "plen-3" in case_name else 0
        if case["returns"] == "tuple":
            f0, uv = predictor.compute_f0_uv(wav, p_len)
            _check(f0, arrays[case["ret0"]["key"]], LIB_ATOL)
            _check(uv, arrays[case["ret1"]["key"]], 0)
        else:
            _check(predictor.compute_f0(wav, p_len), arrays[case["ret"]["key"]], LIB_ATOL)


def test_harvest_compute_f0_works(f0_fx) -> None:
    # 4.1's HarvestF0Predictor.compute_f0 crashed; ours returns compute_f0_uv's F0.
    _same_library("harvest")
    _, arrays = f0_fx
    f0 = HarvestF0Predictor().compute_f0(arrays["signal"])
    _check(f0, arrays["harvest.compute_f0_uv__ret0"], LIB_ATOL)


def test_pm_rejects_far_p_len() -> None:
    wav = np.zeros(512 * 20)
    with pytest.raises(ValueError, match="pm: pad length error: p_len 24 is 4 frames away"):
        PMF0Predictor().compute_f0_uv(wav, 24)
    assert PMF0Predictor().compute_f0_uv(wav, 23)[0].shape == (23,)


def test_registry() -> None:
    assert set(F0_PREDICTORS) == {"pm", "dio", "harvest", "crepe", "rmvpe", "fcpe"}
    predictor = get_f0_predictor("dio", hop_length=256, sampling_rate=22050)
    assert isinstance(predictor, DioF0Predictor)
    assert (predictor.hop_length, predictor.sampling_rate) == (256, 22050)
    assert (predictor.f0_min, predictor.f0_max) == (50, 1100)
    assert isinstance(get_f0_predictor("pm"), PMF0Predictor)
    assert isinstance(get_f0_predictor("harvest"), HarvestF0Predictor)
    with pytest.raises(ValueError, match="crepe, dio, fcpe, harvest, pm, rmvpe"):
        get_f0_predictor("yin")


@pytest.mark.parametrize("name", ["pm", "dio", "harvest", "crepe", "rmvpe", "fcpe"])
def test_every_registered_name_builds(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no pretrain/ folder a neural predictor may only fail for want of its weights.
    monkeypatch.chdir(tmp_path)
    try:
        predictor = get_f0_predictor(name, hop_length=256, sampling_rate=22050, device="cpu", threshold=0.3)
    except FileNotFoundError as error:
        assert name in ("crepe", "rmvpe", "fcpe") and name in str(error).lower()
        return
    assert isinstance(predictor, F0Predictor) and predictor.name == name
    assert (predictor.hop_length, predictor.sampling_rate) == (256, 22050)
    if name in ("crepe", "rmvpe", "fcpe"):
        assert (predictor.device, predictor.threshold) == (torch.device("cpu"), 0.3)


def test_registry_import_is_cheap_and_scripts_share_it() -> None:
    code = (
        "import sys\n"
        "import modules.F0Predictor\n"
        "heavy = [m for m in ('torch', 'numpy', 'parselmouth', 'pyworld') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import inference_main, preprocess_hubert_f0\n"
        "names = modules.F0Predictor.F0_PREDICTORS\n"
        "action = {a.dest: a for a in preprocess_hubert_f0.build_parser()._actions}['f0_predictor']\n"
        "assert tuple(action.choices) == names, action.choices\n"
        "assert ', '.join(names) in ' '.join(inference_main.build_parser().format_help().split())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
