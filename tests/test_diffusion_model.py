"""Unit2Mel / GaussianDiffusion / WaveNet and the ddpm, ddim and pndm samplers against the 4.1 fixture
`diffusion/` (README there: the recorded model, inputs, forward cases and the training loss).

Recorded forward cases ran with every RNG entry point returning zeros; here the same happens through
`noise_fn=torch.zeros_like`, the model's one source of Gaussian noise.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import FIXTURES
from diffusion.diffusion import DiffusionStepError, GaussianDiffusion
from diffusion.samplers import SAMPLERS, get_sampler
from diffusion.unit2mel import Unit2Mel, load_diffusion_model
from diffusion.wavenet import WaveNet
from core.checkpoint import CheckpointError, CheckpointNotFoundError
from core.config import ConfigNotFoundError

DIR = FIXTURES / "diffusion"
SHALLOW_TOL = 1e-4  # README: shallow cases abs 1e-4
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def meta() -> dict:
    if not (DIR / "diffusion_cases.npz").exists():
        pytest.skip(f"fixture {DIR} not available")
    return json.loads((DIR / "diffusion_cases.json").read_text())


@pytest.fixture(scope="module")
def arrays(meta) -> dict[str, torch.Tensor]:
    with np.load(DIR / "diffusion_cases.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


@pytest.fixture(scope="module")
def model(meta) -> Unit2Mel:
    net, _ = load_diffusion_model(DIR / "model_2000.pt", config_path=DIR / "diffusion.yaml")
    return net


class StepRecorder(torch.nn.Module):
    """Stands in for the denoiser and records the steps it is called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.steps: list[float] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert isinstance(t, torch.Tensor) and t.shape == (x.shape[0],)
        self.steps.append(float(t[0]))
        return self.inner(x, t, cond)


def run_case(model: Unit2Mel, arrays: dict, case: dict, noise_calls: list | None = None,
             recorder: StepRecorder | None = None) -> torch.Tensor:
    def zeros(x: torch.Tensor) -> torch.Tensor:
        if noise_calls is not None:
            noise_calls.append(tuple(x.shape))
        return torch.zeros_like(x)

    aug = None if case["aug_shift"] is None else torch.full((1, 1, 1), float(case["aug_shift"]))
    gt = arrays[case["gt_spec"]] if case["gt_spec"] else None
    inner = model.decoder.denoise_fn
    if recorder is not None:
        model.decoder.denoise_fn = recorder
    try:
        with torch.no_grad():
            return model(arrays["in_units"], arrays["in_f0"], arrays["in_volume"], spk_id=arrays["in_spk_id"],
                         spk_mix_dict=case["spk_mix_dict"], aug_shift=aug, gt_spec=gt, infer=True,
                         infer_speedup=case["infer_speedup"], method=case["method"], k_step=case["k_step"],
                         use_tqdm=False, noise_fn=zeros)
    finally:
        model.decoder.denoise_fn = inner


# -- structure ------------------------------------------------------------------------------------
def test_checkpoint_keys_and_effective_k_step_max(meta, model) -> None:
    recorded = meta["checkpoint"]["model_state_dict"]
    state = model.state_dict()
    assert list(state) == list(recorded)
    for key, spec in recorded.items():
        assert list(state[key].shape) == spec["shape"], key
    assert model.k_step_max == model.decoder.k_step_max == 1000 and not model.training


def test_default_size_manifest() -> None:
    manifest = json.loads((DIR / "default_unit2mel_manifest.json").read_text())
    with torch.device("meta"):  # shapes only: the 55M-parameter model is never materialised
        big = Unit2Mel(768, 1, True, 128, 20, 512, 256, 1000, 0)
        multi = Unit2Mel(768, 4, True, 128, 20, 512, 256, 1000, 0)
    state = big.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == \
        {k: v["shape"] for k, v in manifest["state_dict"].items()}
    assert list(state) == list(manifest["state_dict"])
    assert sum(p.numel() for p in big.parameters()) == manifest["n_trainable_params"]
    extra = set(multi.state_dict()) - set(state)
    assert {k: list(multi.state_dict()[k].shape) for k in extra} == \
        manifest["extra_keys_when_n_spk_gt_1 (shown for n_spk=4)"]


def test_seeded_init_matches_recorded_model(meta) -> None:
    # Same build order and per-layer init as 4.1: a seeded fresh model equals the recorded one, except
    # the zero-initialised last layer that the fixture generator overwrote (README "Model").
    cfg = meta["model_config"]
    torch.manual_seed(cfg["seed"])
    fresh = Unit2Mel(cfg["input_channel"], cfg["n_spk"], cfg["use_pitch_aug"], cfg["out_dims"], cfg["n_layers"],
                     cfg["n_chans"], cfg["n_hidden"], cfg["timesteps"], cfg["k_step_max"])
    saved = torch.load(DIR / "model_2000.pt", weights_only=True)["model"]
    last = "decoder.denoise_fn.output_projection.weight"
    for key, value in fresh.state_dict().items():
        if key != last:
            assert torch.equal(value, saved[key]), key
    assert not fresh.state_dict()[last].any()


def test_schedule_buffers_of_a_fresh_model(arrays) -> None:
    decoder = GaussianDiffusion(WaveNet(128, 1, 4, 8), timesteps=1000, k_step=0)
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                 "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
                 "posterior_mean_coef2"):
        np.testing.assert_allclose(getattr(decoder, name).numpy(), arrays[f"buf__{name}"], rtol=1e-6, atol=0)
    assert decoder.spec_min.shape == (1, 1, 1) and float(decoder.spec_min) == -12 and float(decoder.spec_max) == 2


@pytest.mark.parametrize("k_step_max, expected", [(0, 1000), (-3, 1000), (1000, 1000), (1500, 1000), (100, 100)])
def test_k_step_max_rule(k_step_max: int, expected: int) -> None:
    assert GaussianDiffusion(WaveNet(8, 1, 4, 8), out_dims=8, k_step=k_step_max).k_step_max == expected


# -- embedding and denoiser -------------------------------------------------------------------------
def test_condition_main(model, arrays) -> None:
    with torch.no_grad():
        cond = model.embed(arrays["in_units"], arrays["in_f0"], arrays["in_volume"], arrays["in_spk_id"])
    np.testing.assert_allclose(cond.numpy(), arrays["condition_main"].numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, step", [("t0", 0), ("t537", 537), ("t12p5", 12.5), ("t999", 999)])
def test_denoiser_outputs(model, arrays, name: str, step: float) -> None:
    t = torch.tensor([step], dtype=torch.float32 if isinstance(step, float) else torch.long)
    with torch.no_grad():
        out = model.decoder.denoise_fn(arrays["denoiser_in_x"], t, arrays["condition_main"].transpose(1, 2))
    np.testing.assert_allclose(out.numpy(), arrays[f"denoiser_out__{name}"].numpy(), atol=1e-5, rtol=0)


def test_training_loss_with_recorded_draws(model, arrays) -> None:
    model.train()
    try:
        loss = model(arrays["train_units"], arrays["train_f0"], arrays["train_volume"], arrays["train_spk_id"],
                     aug_shift=arrays["train_aug_shift"], gt_spec=arrays["train_gt_spec"], infer=False,
                     k_step=model.k_step_max, t=arrays["train_t"], noise_fn=lambda x: arrays["train_noise"])
        # Random draws: t in [0, k_step_max), noise shaped [B, 1, M, T]; still a finite scalar.
        torch.manual_seed(0)
        random_loss = model(arrays["train_units"], arrays["train_f0"], arrays["train_volume"],
                            arrays["train_spk_id"], gt_spec=arrays["train_gt_spec"], infer=False)
    finally:
        model.eval()
    assert loss.dim() == 0 and loss.requires_grad
    np.testing.assert_allclose(loss.item(), float(arrays["train_loss"]), rtol=1e-5)
    assert torch.isfinite(random_loss)


# -- sampling ---------------------------------------------------------------------------------------
MY_CASES = ["naive_k20", "ddim_k20", "pndm_k20", "naive_k100", "ddim_k100", "pndm_k100", "ddim_k25_speedup10",
            "pndm_k25_speedup10", "ddim_k20_augshift", "full_ddim_speedup100", "full_naive"]


@pytest.mark.parametrize("name", MY_CASES)
def test_forward_case(model, arrays, meta, name: str) -> None:
    case = meta["cases"][name]
    calls: list = []
    recorder = StepRecorder(model.decoder.denoise_fn)
    out = run_case(model, arrays, case, calls, recorder)
    ref = arrays[case["output"]].numpy()
    assert out.shape == ref.shape
    if case["gt_spec"]:
        np.testing.assert_allclose(out.numpy(), ref, atol=SHALLOW_TOL, rtol=0)
    else:  # full diffusion reaches hundreds with a random model (README: rel ~1e-5 + abs 1e-3)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-3, rtol=1e-5)
    # Same network calls at the same steps, and as many Gaussian draws as 4.1 made.
    assert len(recorder.steps) == case["denoiser_calls"]
    assert recorder.steps[:len(case["denoiser_first_steps"])] == case["denoiser_first_steps"]
    assert len(calls) == sum(case["rng_calls"].values())


def test_spk_mix_dict_case(model, arrays, meta) -> None:
    case = meta["cases"]["dpm-solver++_k100_spkmixdict"]
    out = run_case(model, arrays, case)
    np.testing.assert_allclose(out.numpy(), arrays[case["output"]].numpy(), atol=SHALLOW_TOL, rtol=0)


def test_shallow_start_is_scaled_mel(model, arrays) -> None:
    # With zero noise the start is sqrt(abar[k-1]) * norm(mel); a zero-step sampler returns it as is.
    decoder = model.decoder
    x = decoder.q_sample(decoder.norm_spec(arrays["in_gt_spec"]).transpose(1, 2)[:, None],
                         torch.tensor([19]), noise=torch.zeros(1, 1, 128, 48))
    expected = decoder.sqrt_alphas_cumprod[19] * decoder.norm_spec(arrays["in_gt_spec"]).transpose(1, 2)[:, None]
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    torch.testing.assert_close(decoder.denorm_spec(decoder.norm_spec(arrays["in_gt_spec"])), arrays["in_gt_spec"],
                               rtol=0, atol=1e-5)


def test_pndm_with_k_step_below_speedup_runs(model, arrays, meta) -> None:
    # 4.1 crashed here (case error_pndm_k5_speedup10); fixed: one step at t = 0, mel nearly unchanged.
    case = dict(meta["cases"]["error_pndm_k5_speedup10"])
    recorder = StepRecorder(model.decoder.denoise_fn)
    out = run_case(model, arrays, case, recorder=recorder)
    assert out.shape == (1, 48, 128) and torch.isfinite(out).all()
    assert recorder.steps == [0.0, 0.0]
    np.testing.assert_allclose(out.numpy(), arrays["in_gt_spec"].numpy(), atol=0.05, rtol=0)


@pytest.mark.parametrize("method", ["pndm", "ddim"])
def test_batch_equals_single_items(model, arrays, method: str) -> None:
    # 4.1's pndm compared a [B] tensor with Python's max and failed for B > 1; items must not interact.
    units, f0, vol, gt = (torch.cat([arrays[k], arrays[k].flip(1)]) for k in
                          ("in_units", "in_f0", "in_volume", "in_gt_spec"))
    spk = torch.tensor([[1], [0]])
    kwargs = dict(infer_speedup=10, method=method, k_step=30, use_tqdm=False, noise_fn=torch.zeros_like)
    with torch.no_grad():
        both = model(units, f0, vol, spk_id=spk, gt_spec=gt, **kwargs)
        second = model(units[1:], f0[1:], vol[1:], spk_id=spk[1:], gt_spec=gt[1:], **kwargs)
    torch.testing.assert_close(both[1:], second, rtol=0, atol=1e-5)


def test_real_noise_is_used_by_default(model, arrays) -> None:
    kwargs = dict(spk_id=arrays["in_spk_id"], gt_spec=arrays["in_gt_spec"], infer_speedup=10, method="ddim",
                  k_step=20, use_tqdm=False)
    args = (arrays["in_units"], arrays["in_f0"], arrays["in_volume"])
    with torch.no_grad():
        torch.manual_seed(3)
        a = model(*args, **kwargs)
        torch.manual_seed(3)
        b = model(*args, **kwargs)
        zero = model(*args, noise_fn=torch.zeros_like, **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - zero).abs().max() > 1e-3
    assert model.decoder.noise_fn is None  # the per-call source does not stick


# -- errors -----------------------------------------------------------------------------------------
def test_k_step_above_k_step_max(model, arrays, meta) -> None:
    case = meta["cases"]["error_k_step_gt_k_step_max"]
    calls: list = []
    with pytest.raises(DiffusionStepError) as err:
        run_case(model, arrays, case, calls)
    text = str(err.value)
    assert text.startswith(case["error"]["message"]) and "1001" in text and "1000" in text
    assert isinstance(err.value, Exception) and calls == []


def test_unknown_method_after_the_start(model, arrays, meta) -> None:
    case = meta["cases"]["error_unknown_method"]
    calls: list = []
    with pytest.raises(NotImplementedError) as err:
        run_case(model, arrays, case, calls)
    assert str(err.value).startswith("naive")
    assert all(name in str(err.value) for name in SAMPLERS)
    assert len(calls) == 1  # the shallow start was drawn first, as in 4.1


def test_sampler_registry() -> None:
    assert set(SAMPLERS) == {"ddim", "pndm", "dpm-solver", "dpm-solver++", "unipc"}
    from diffusion.samplers import stride

    assert get_sampler("ddim", 10) is stride.ddim and get_sampler("pndm", 2) is stride.pndm
    assert get_sampler(None, 10) is stride.ddpm and get_sampler("anything", 1) is stride.ddpm
    with pytest.raises(NotImplementedError):
        get_sampler("DDIM", 10)


def test_full_diffusion_with_shallow_only_model(arrays) -> None:
    model = Unit2Mel(768, 1, False, 128, 1, 4, 8, 1000, 100).eval()
    with pytest.raises(DiffusionStepError, match=r"^This model can only be used for shallow diffusion.*100"):
        model(arrays["in_units"], arrays["in_f0"], arrays["in_volume"], gt_spec=None, use_tqdm=False)
    with pytest.raises(DiffusionStepError, match="k_step 101 > k_step_max 100"):
        model(arrays["in_units"], arrays["in_f0"], arrays["in_volume"], gt_spec=arrays["in_gt_spec"], k_step=101)


# -- speakers ---------------------------------------------------------------------------------------
def test_spk_mix_dict_is_weighted_sum(model, arrays) -> None:
    args = (arrays["in_units"], arrays["in_f0"], arrays["in_volume"])
    with torch.no_grad():
        mixed = model.embed(*args, spk_mix_dict={"0": 0.3, "1": 0.7})
        base = model.embed(*args, spk_mix_dict={})
        e = model.spk_embed.weight
    torch.testing.assert_close(mixed, base + 0.3 * e[0] + 0.7 * e[1], rtol=0, atol=1e-6)


def test_per_frame_speaker_mix_after_init_spkmix(model, arrays) -> None:
    # 4.1 crashed in init_spkmix for n_spk > 1; here it works and the per-frame branch is reachable.
    args = (arrays["in_units"], arrays["in_f0"], arrays["in_volume"])
    frames = args[0].shape[1]
    one_hot = torch.zeros(frames, 2)
    one_hot[:, 1] = 1.0
    with pytest.raises(ValueError, match="init_spkmix"):
        model.embed(*args, spk_id=one_hot)
    model.init_spkmix(2)
    try:
        assert model.speaker_map.shape == (2, 32) and "speaker_map" not in model.state_dict()
        kwargs = dict(infer_speedup=10, method="ddim", k_step=20, use_tqdm=False, noise_fn=torch.zeros_like,
                      gt_spec=arrays["in_gt_spec"])
        with torch.no_grad():
            torch.testing.assert_close(model(*args, spk_id=one_hot, **kwargs),
                                       model(*args, spk_id=arrays["in_spk_id"], **kwargs), rtol=0, atol=1e-5)
            weights = torch.tensor([0.3, 0.7]).expand(frames, 2)
            torch.testing.assert_close(model.embed(*args, spk_id=weights),
                                       model.embed(*args, spk_mix_dict={0: 0.3, 1: 0.7}), rtol=0, atol=1e-6)
    finally:
        model.speaker_map = None


def test_single_speaker_model_ignores_speakers(arrays) -> None:
    model = Unit2Mel(768, 1, True, 128, 1, 4, 8).eval()
    model.init_spkmix(1)  # nothing to prepare, no crash
    args = (arrays["in_units"], arrays["in_f0"], arrays["in_volume"])
    with torch.no_grad():
        torch.testing.assert_close(model.embed(*args, spk_id=torch.tensor([[0]])), model.embed(*args))


# -- loading ----------------------------------------------------------------------------------------
def _config(tmp_path: Path, **model_fields: object) -> Path:
    data = yaml.safe_load((DIR / "diffusion.yaml").read_text())
    for dotted, value in model_fields.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("field, value, named", [
    ("model__n_layers", 3, "model.n_layers: model file 2, config 3"),
    ("data__encoder_out_channels", 256, "data.encoder_out_channels: model file 768, config 256"),
    ("model__n_spk", 1, "model.n_spk: model file 2, config 1"),
])
def test_config_model_mismatch_is_named(tmp_path, field: str, value: int, named: str) -> None:
    with pytest.raises(CheckpointError) as err:
        load_diffusion_model(DIR / "model_2000.pt", config_path=_config(tmp_path, **{field: value}))
    assert named in str(err.value) and "model_2000.pt" in str(err.value)


def test_config_next_to_model_and_missing_files(tmp_path) -> None:
    shutil.copy(DIR / "model_2000.pt", tmp_path / "model_2000.pt")
    with pytest.raises(ConfigNotFoundError, match="config.yaml not found"):
        load_diffusion_model(tmp_path / "model_2000.pt")
    _config(tmp_path)
    model, args = load_diffusion_model(tmp_path / "model_2000.pt")
    assert args.model.n_spk == 2 and model.spk_embed is not None
    with pytest.raises(CheckpointNotFoundError, match="model_9.pt not found"):
        load_diffusion_model(tmp_path / "model_9.pt")
