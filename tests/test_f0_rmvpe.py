"""RMVPE predictor against the 4.1 ``f0`` fixture (tolerances from its README).

The full-size checkpoint (92 M values) is rebuilt once per module from the fixture's numpy recipe
(det_weights.py), checked against rmvpe_manifest.json, and installed as pretrain/rmvpe.pt in a
temporary working directory. The network runs once: later calls on the same mel reuse its output,
as the fixture generator memoised its expensive calls.

Tolerances: the mel and the decoding of the recorded salience meet the README's 1e-5 / 1e-3 Hz. The
salience itself cannot: this random-weight U-Net reaches activations of ~3e4, and float32 rounding
makes the recorded salience differ from a float64 evaluation of the same network by 9e-5 (and ours,
on another CPU kernel path, by 1.4e-4). So salience is compared at 5e-4 and F0 computed from our own
salience at 5e-3 Hz (observed 1.7e-3); a wrong network or decoder is off by far more.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, f0_case_names
from core.checkpoint import CheckpointError
from modules.F0Predictor import get_f0_predictor
from modules.F0Predictor.rmvpe.inference import RMVPE, load_rmvpe, rmvpe_mel
from modules.F0Predictor.RMVPEF0Predictor import RMVPEF0Predictor
from modules.F0Predictor.salience import local_average

FOLDER = FIXTURES / "f0"
MEL_ATOL = 1e-5
DECODE_ATOL = 1e-3  # Hz, decoding the recorded salience
SALIENCE_ATOL = 5e-4  # see module docstring
F0_ATOL = 5e-3  # Hz, from our own salience


@pytest.fixture(scope="module")
def fx() -> tuple[dict, dict[str, np.ndarray]]:
    if not (FOLDER / "f0_outputs.npz").exists():
        pytest.skip(f"fixture {FOLDER} not available")
    with np.load(FOLDER / "f0_outputs.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k.startswith(("rmvpe", "signal"))}
    return json.loads((FOLDER / "f0_cases.json").read_text()), arrays


def _rebuild_checkpoint(target: Path) -> None:
    """Rebuild the fixture checkpoint with the fixture's own recipe and verify every tensor."""
    spec = importlib.util.spec_from_file_location("det_weights", FOLDER / "det_weights.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    manifest = json.loads((FOLDER / "rmvpe_manifest.json").read_text())
    state = recipe.build_state_dict(manifest["state_dict"], manifest["weight_seed"])
    assert sum(v.size for v in state.values()) == manifest["n_values"]
    for key, check in manifest["checksums"].items():
        values = state[key].reshape(-1)
        assert values.astype(np.float64).sum() == pytest.approx(check["sum_float64"], rel=1e-9, abs=1e-9), key
        np.testing.assert_array_equal(values[: len(check["first"])], np.asarray(check["first"], values.dtype))
    target.parent.mkdir(parents=True)
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, target)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, fx) -> Path:
    root = tmp_path_factory.mktemp("rmvpe")
    _rebuild_checkpoint(root / "pretrain" / "rmvpe.pt")
    return root


class _MemoNetwork:
    """Stands in for ``RMVPE.mel2hidden``: runs the network once per distinct mel."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        for known, hidden in self.seen:
            if known.shape == mel.shape and torch.equal(known, mel):
                return hidden.clone()
        hidden = self.inner(mel)
        self.seen.append((mel.clone(), hidden))
        return hidden.clone()


@pytest.fixture(scope="module")
def predictor(workdir) -> RMVPEF0Predictor:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        p = get_f0_predictor("rmvpe", hop_length=512, sampling_rate=44100, device="cpu", threshold=0.05)
    assert isinstance(p, RMVPEF0Predictor)
    p.model.mel2hidden = _MemoNetwork(p.model.mel2hidden)
    return p


def _with_threshold(p: RMVPEF0Predictor, threshold: float) -> RMVPEF0Predictor:
    q = copy.copy(p)
    q.threshold = threshold
    return q


def _flipped(ours: np.ndarray, ref: np.ndarray, flagged: list[int]) -> list[int]:
    """Flagged (tiny top-2 margin) frames whose arg-max came out differently here."""
    return [i for i in flagged if ours[i].argmax() != ref[i].argmax()]


def _output_mask(n_model: int, p_len: int, flipped: list[int], uv_ref: np.ndarray) -> np.ndarray:
    """Output frames that do not depend on a flipped model frame (nearest resize + interpolation)."""
    source = np.floor(np.arange(p_len) * (n_model / p_len)).astype(int)
    bad = np.isin(source, flipped)
    voiced = np.flatnonzero(uv_ref)
    for i in np.flatnonzero(uv_ref == 0):
        left, right = voiced[voiced < i], voiced[voiced > i]
        if (left.size and bad[left[-1]]) or (right.size and bad[right[0]]):
            bad[i] = True
    return ~bad


def test_audio_resampled_and_mel(fx) -> None:
    _, a = fx
    from modules.audio_resample import resample

    audio16 = resample(torch.from_numpy(a["signal"])[None], 44100, 16000, lowpass_filter_width=128)
    expected = a["rmvpe.compute_f0_uv__raw__rmvpe_audio_16k"]
    np.testing.assert_allclose(audio16.numpy(), expected, rtol=0, atol=2.5e-7)
    mel = rmvpe_mel(torch.from_numpy(a["rmvpe.compute_f0_uv__raw__rmvpe_audio_16k"]))
    assert mel.shape == (1, 128, 301)
    np.testing.assert_allclose(mel.numpy(), a["rmvpe.compute_f0_uv__raw__rmvpe_mel"], rtol=0, atol=MEL_ATOL)


def test_salience_matches(fx, predictor) -> None:
    meta, a = fx
    hidden = predictor.model.mel2hidden(torch.from_numpy(a["rmvpe.compute_f0_uv__raw__rmvpe_mel"]))
    ref = a["rmvpe.compute_f0_uv__raw__rmvpe_hidden"]
    assert hidden.shape == ref.shape == (1, 301, 360)
    np.testing.assert_allclose(hidden.numpy(), ref, rtol=0, atol=SALIENCE_ATOL)
    flagged = meta["cases"]["rmvpe.compute_f0_uv"]["salience_stats"]["frames_with_top2_margin_below_1e-4"]
    assert flagged == [15]
    stable = np.setdiff1d(np.arange(301), flagged)
    np.testing.assert_array_equal(hidden[0].numpy()[stable].argmax(-1), ref[0][stable].argmax(-1))


@pytest.mark.parametrize("case", ["rmvpe", "rmvpe_adaptive_threshold", "rmvpe_all_unvoiced"])
def test_decode_recorded_salience(fx, predictor, case: str) -> None:
    meta, a = fx
    threshold = meta["cases"][f"{case}.compute_f0_uv"]["threshold"]
    hidden = torch.from_numpy(a["rmvpe.compute_f0_uv__raw__rmvpe_hidden"][0])
    f0 = predictor.model.decode(hidden, threshold)
    ref = a[f"{case}.compute_f0_uv__raw__rmvpe_f0"]
    assert f0.dtype == torch.float32 and f0.shape == ref.shape
    np.testing.assert_array_equal(f0.numpy() > 0, ref > 0)
    np.testing.assert_allclose(f0.numpy(), ref, rtol=0, atol=DECODE_ATOL)


@pytest.mark.parametrize("name", f0_case_names("rmvpe"))
def test_case(fx, predictor, name: str) -> None:
    meta, a = fx
    case = meta["cases"][name]
    p = _with_threshold(predictor, case["threshold"])
    signal = a["signal"]
    method = name.split(".")[1]
    p_len = None
    if method.endswith("_plen+2"):
        p_len = len(signal) // 512 + 2
        method = method.removesuffix("_plen+2")
    out = getattr(p, method)(signal, p_len)

    prefix = name.split(".")[0]
    ours_hidden = p.model.mel2hidden(torch.from_numpy(a["rmvpe.compute_f0_uv__raw__rmvpe_mel"]))[0].numpy()
    flagged = case.get("salience_stats", meta["cases"]["rmvpe.compute_f0_uv"]["salience_stats"])
    ref_hidden = a["rmvpe.compute_f0_uv__raw__rmvpe_hidden"][0]
    flipped = _flipped(ours_hidden, ref_hidden, flagged["frames_with_top2_margin_below_1e-4"])
    raw_key = f"{prefix}.compute_f0_uv__raw__rmvpe_f0"
    if raw_key in a:
        raw = p.model_f0(torch.from_numpy(signal)).numpy()
        np.testing.assert_array_equal(raw > 0, a[raw_key] > 0)
        stable = np.setdiff1d(np.arange(raw.shape[0]), flipped)
        np.testing.assert_allclose(raw[stable], a[raw_key][stable], rtol=0, atol=F0_ATOL)

    if case["returns"] == "single":
        outs, specs = [out], [case["ret"]]
    else:
        assert isinstance(out, tuple) and len(out) == 2
        outs, specs = list(out), [case["ret0"], case["ret1"]]
    uv_ref = a[specs[-1]["key"]] if len(specs) == 2 else a[f"{prefix}.compute_f0_uv__ret1"]
    for value, spec, atol in zip(outs, specs, (F0_ATOL, 0.0)):  # uv (second) exactly
        ref = a[spec["key"]]
        assert isinstance(value, np.ndarray) and value.dtype == ref.dtype and value.shape == ref.shape
        keep = _output_mask(301, ref.shape[0], flipped, uv_ref)
        np.testing.assert_allclose(value[keep], ref[keep], rtol=0, atol=atol)


def test_p_len_too_far_is_refused(predictor) -> None:
    wav = np.zeros(512 * 20, dtype=np.float32)
    with pytest.raises(ValueError, match="pad length error"):
        predictor.compute_f0_uv(wav, 24)


def test_missing_checkpoint_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'rmvpe' needs pretrain.rmvpe\.pt.*rmvpe\.zip"):
        get_f0_predictor("rmvpe", device="cpu")


def test_mismatched_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "rmvpe.pt"
    torch.save({"model": {"cnn.weight": torch.zeros(3, 16, 3, 3), "bogus": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*(missing|bogus)"):
        load_rmvpe(path)
    torch.save({"weights": {}}, path)
    with pytest.raises(CheckpointError, match="'model'"):
        RMVPE(path)


def test_local_average_edges() -> None:
    salience = torch.zeros(2, 12)
    salience[0, 0], salience[0, 1] = 1.0, 0.5  # peak on the first bin
    salience[1, 11], salience[1, 10] = 1.0, 1.0  # tie: first maximum wins
    values = torch.arange(12, dtype=torch.float32) * 10
    zero, peak = local_average(salience, values, "zero")
    clamp, _ = local_average(salience, values, "clamp")
    np.testing.assert_allclose(peak.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(zero.numpy(), [5 / 1.5, 105.0], rtol=1e-6)
    # clamped: bin 0 counted 5 times (centre and the 4 positions left of it); row 1 is centred on
    # bin 10, whose window 6..14 counts bin 11 four times.
    np.testing.assert_allclose(clamp.numpy(), [5 / 5.5, (100 + 110 * 4) / 5], rtol=1e-6)
