"""SynthesizerTrn against the 4.1 fixtures in ../shared/fixtures/sovits41/synth/<variant>/.

Each checkpoint loads strictly; ``infer`` with the random sources zeroed reproduces the
recorded audio and intermediates; the real-RNG recordings are reproduced too, since our
draws happen in 4.1's order and shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import utils
from conftest import FIXTURES, zeroed_rng
from models import SynthesizerTrn
from core.config import HParams
from generator import build_synthesizer

SYNTH = FIXTURES / "synth"
VARIANTS = sorted(p.name for p in SYNTH.glob("*") if (p / "fixture.npz").exists())
AUDIO_TOL = 1e-4
FEATURE_TOL = 1e-5


def build(variant_dir: Path, checkpoint: str | None = None) -> tuple[SynthesizerTrn, dict]:
    cfg = json.loads((variant_dir / "config.json").read_text())
    net = build_synthesizer(HParams(cfg))
    if checkpoint is None:
        checkpoint = next(p.name for p in sorted(variant_dir.glob("G_*.pth")) if "release" not in p.name)
    state = torch.load(variant_dir / checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"], strict=True)
    return net.eval(), cfg


class Recorder:
    """Forward hooks that capture the intermediates the fixtures store."""

    def __init__(self, net: SynthesizerTrn) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles = [
            net.enc_p.register_forward_pre_hook(self._enc_p_in),
            net.enc_p.register_forward_hook(self._enc_p_out),
            net.flow.register_forward_hook(self._flow_out, with_kwargs=True),
            net.dec.m_source.register_forward_hook(self._source_out),
        ]
        if hasattr(net, "f0_decoder"):
            self.handles.append(net.f0_decoder.register_forward_hook(self._f0_dec))

    def _enc_p_in(self, _m, args):
        self.values["enc_p_in_x"], self.values["x_mask"] = args[0].clone(), args[1].clone()

    def _enc_p_out(self, _m, _args, out):
        self.values["z_p"], self.values["m_p"], self.values["logs_p"] = (t.clone() for t in out[:3])

    def _flow_out(self, _m, _args, kwargs, out):
        self.values["z"] = out.clone()
        self.values["g"] = kwargs["g"].clone()

    def _source_out(self, _m, _args, out):
        self.values["har_source"] = out.clone()

    def _f0_dec(self, _m, args, out):
        self.values["norm_lf0"], self.values["pred_lf0"] = args[1].clone(), out.clone()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _inputs(arrays: dict) -> dict:
    vol = torch.from_numpy(arrays["in_vol"]) if "in_vol" in arrays else None
    return dict(c=torch.from_numpy(arrays["in_c"]), f0=torch.from_numpy(arrays["in_f0"]),
                uv=torch.from_numpy(arrays["in_uv"]), vol=vol)


def _close(actual: torch.Tensor, expected: np.ndarray, tol: float, what: str, rtol: float = 0.0) -> None:
    assert tuple(actual.shape) == expected.shape, what
    diff = np.abs(actual.detach().numpy().astype(np.float64) - expected)
    excess = diff - tol - rtol * np.abs(expected)
    assert float(excess.max()) <= 0, f"{what}: max abs error {float(diff.max()):.3g} (tol {tol}, rtol {rtol})"


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    folder = SYNTH / request.param
    with np.load(folder / "fixture.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    net, cfg = build(folder)
    return folder, net, cfg, arrays, json.loads((folder / "fixture.json").read_text())


@pytest.mark.parametrize("prefix", ["zn", "pf"])
def test_infer_zeroed_rng_matches_fixture(variant, prefix: str) -> None:
    _folder, net, _cfg, arrays, _meta = variant
    inp = _inputs(arrays)
    rec = Recorder(net)
    try:
        with zeroed_rng():
            audio, f0_out = net.infer(inp["c"], inp["f0"], inp["uv"], g=torch.from_numpy(arrays["in_sid"]),
                                      noice_scale=0.35, seed=52468, predict_f0=prefix == "pf", vol=inp["vol"])
    finally:
        rec.close()
    _close(audio, arrays[f"{prefix}_audio"], AUDIO_TOL, "audio")
    # F0 in Hz: float32 rounding of 10**x is relative (about 1e-6 of a few hundred Hz).
    _close(f0_out, arrays[f"{prefix}_f0_out"], AUDIO_TOL, "f0_out", rtol=1e-5)
    assert np.array_equal(utils.f0_to_coarse(f0_out).numpy(), arrays[f"{prefix}_f0_coarse"])
    for name in ("enc_p_in_x", "x_mask", "z_p", "m_p", "logs_p", "z"):
        _close(rec.values[name], arrays[f"{prefix}_{name}"], FEATURE_TOL * 10, name)
    _close(rec.values["har_source"], arrays[f"{prefix}_har_source"], AUDIO_TOL, "har_source")
    if f"{prefix}_pred_lf0" in arrays:
        _close(rec.values["norm_lf0"], arrays[f"{prefix}_norm_lf0"], FEATURE_TOL, "norm_lf0")
        _close(rec.values["pred_lf0"], arrays[f"{prefix}_pred_lf0"], FEATURE_TOL * 10, "pred_lf0")


def test_f0_coarse_direct(variant) -> None:
    _folder, _net, _cfg, arrays, _meta = variant
    assert np.array_equal(utils.f0_to_coarse(torch.from_numpy(arrays["in_f0"])).numpy(), arrays["f0_coarse_direct"])


def test_infer_real_rng_matches_fixture(variant) -> None:
    _folder, net, _cfg, arrays, _meta = variant
    inp = _inputs(arrays)
    keys = sorted(k[:-len("_audio")] for k in arrays if k.startswith("rng_seed") and k.endswith("_audio"))
    assert keys, "fixture has no real-RNG recordings"
    for key in keys:
        seed = int(key.split("_")[1].removeprefix("seed"))
        noise = int(key.split("_")[2].removeprefix("ns")) / 100
        torch.manual_seed(999)  # infer must not depend on the caller's RNG state
        audio, _ = net.infer(inp["c"], inp["f0"], inp["uv"], g=torch.from_numpy(arrays["in_sid"]),
                             noice_scale=noise, seed=seed, vol=inp["vol"])
        _close(audio, arrays[f"{key}_audio"], AUDIO_TOL, key)


def test_inference_path_matches_fixture(variant, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the inference loader runs it (weight norm folded, inference mode: the in-place decoder with its CPU
    convolution forms): the recorded audio, and within 1e-4 of the plain path (`SOVITS_PLAIN=1`)."""
    folder, _net, _cfg, arrays, _meta = variant
    net, _ = build(folder)
    net.remove_weight_norm()
    inp = _inputs(arrays)
    key = next(k[:-len("_audio")] for k in sorted(arrays) if k.startswith("rng_seed") and k.endswith("_audio"))
    seed, noise = int(key.split("_")[1].removeprefix("seed")), int(key.split("_")[2].removeprefix("ns")) / 100

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return net.infer(inp["c"], inp["f0"], inp["uv"], g=torch.from_numpy(arrays["in_sid"]),
                             noice_scale=noise, seed=seed, vol=inp["vol"])[0]

    monkeypatch.delenv("SOVITS_PLAIN", raising=False)
    fast = run()
    monkeypatch.setenv("SOVITS_PLAIN", "1")
    plain = run()
    _close(fast, arrays[f"{key}_audio"], AUDIO_TOL, key)
    assert not torch.equal(fast, plain) and float((fast - plain).abs().max()) <= 1e-4


def test_speaker_mix_matches_fixture(variant) -> None:
    folder, _net, cfg, arrays, _meta = variant
    if "in_spkmix" not in arrays:
        pytest.skip("variant has no speaker-mix recording")
    net, _ = build(folder)
    inp = _inputs(arrays)
    net.EnableCharacterMix(cfg["model"]["n_speakers"], "cpu")
    rec = Recorder(net)
    try:
        with zeroed_rng():
            audio, _ = net.infer(inp["c"], inp["f0"], inp["uv"], g=torch.from_numpy(arrays["in_spkmix"]),
                                 noice_scale=0.35, seed=52468, vol=inp["vol"])
    finally:
        rec.close()
    _close(rec.values["g"], arrays["mix_g"], FEATURE_TOL, "mix_g")
    _close(rec.values["z"], arrays["mix_z"], FEATURE_TOL * 10, "mix_z")
    _close(audio, arrays["mix_audio"], AUDIO_TOL, "mix_audio")


def test_train_forward_shapes(variant) -> None:
    _folder, net, cfg, arrays, meta = variant
    spec_meta = meta["train_forward"]
    batch = spec_meta["batch"]
    lengths = torch.tensor(batch["lengths"])
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(batch["c"], generator=gen)
    spec = torch.rand(batch["spec"], generator=gen)
    f0 = 200 + 50 * torch.rand(batch["f0"], generator=gen)
    uv = torch.ones(batch["f0"])
    vol = torch.rand(batch["f0"], generator=gen) if batch.get("vol") else None
    g = torch.tensor([[0], [1]])
    net.train()
    try:
        out = net(c, f0, uv, spec, g=g, c_lengths=lengths, spec_lengths=lengths, vol=vol)
    finally:
        net.eval()
    o, ids_slice, spec_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0 = out
    shapes = spec_meta["output_shapes"]
    got = {"o (y_hat)": o, "ids_slice": ids_slice, "spec_mask": spec_mask, "z": z, "z_p": z_p, "m_p": m_p,
           "logs_p": logs_p, "m_q": m_q, "logs_q": logs_q, "pred_lf0": pred_lf0, "norm_lf0": norm_lf0, "lf0": lf0}
    for name, shape in shapes.items():
        if isinstance(shape, list):
            assert list(got[name].shape) == shape, name
        else:
            assert got[name] == shape, name
    assert ids_slice.dtype == torch.int64
    assert int(ids_slice.max()) <= int(lengths.min()) - 20 or int(ids_slice[1]) <= int(lengths[1]) - 20


def test_fp16_model_converts_like_fp32_with_f0_prediction() -> None:
    """An fp16 ("-hf" / "half") model as CUDA runs it, with -a: the F0 decoder takes fp16 input and the
    decoder's running phase stays exact over 6 s (fp16 phase sums overflowed into NaN audio)."""
    net, cfg = build(SYNTH / "base_vec768")
    net.remove_weight_norm()
    frames = 520  # 6 s at 44.1 kHz
    c = torch.randn(1, cfg["model"]["ssl_dim"], frames, generator=torch.Generator().manual_seed(0))
    f0, uv, g = torch.full((1, frames), 880.0), torch.ones(1, frames), torch.LongTensor([[0]])
    with zeroed_rng():
        ref, _ = net.infer(c, f0, uv, g=g, noice_scale=0)
        net.half()
        out, _ = net.infer(c.half(), f0.half(), uv.half(), g=g, noice_scale=0)
        _, pred_f0 = net.infer(c.half(), f0.half(), uv.half(), g=g, noice_scale=0, predict_f0=True)
    assert out.dtype == pred_f0.dtype == torch.float16 and bool(torch.isfinite(pred_f0).all())
    assert float((out.float() - ref).abs().max()) < 0.01
