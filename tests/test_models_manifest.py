"""State-dict contract: our networks have exactly so-vits-svc 4.1's keys, shapes, dtypes and order."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import FIXTURES
from models import MultiPeriodDiscriminator, SynthesizerTrn
from core.schema import model_section

MANIFESTS = FIXTURES / "manifests"
SYNTH_VARIANTS = sorted(p.stem.removeprefix("synthesizer_") for p in MANIFESTS.glob("synthesizer_*.json"))


def _load(name: str) -> dict:
    path = MANIFESTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())


def _check_against(net: torch.nn.Module, manifest: dict) -> None:
    state = net.state_dict()
    entries = manifest["state_dict"]
    expected = {e["key"]: e for e in entries}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    for key, entry in expected.items():
        tensor = state[key]
        assert list(tensor.shape) == entry["shape"], key
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], key
    # Optimizer states index parameters by registration order: it must match too.
    params = list(net.parameters())
    ids = {id(p): i for i, p in enumerate(params)}
    named = dict(net.named_parameters(remove_duplicate=False))
    for entry in entries:
        if entry.get("kind") == "parameter" and entry.get("param_index") is not None:
            assert ids[id(named[entry["key"]])] == entry["param_index"], entry["key"]
        if entry.get("same_tensor_as"):
            assert state[entry["key"]].data_ptr() == state[entry["same_tensor_as"]].data_ptr(), entry["key"]
    summary = manifest["summary"]
    assert len(params) == summary["num_parameters"]
    assert sum(p.numel() for p in params) == summary["num_parameter_elements"]


@pytest.mark.parametrize("variant", SYNTH_VARIANTS)
def test_synthesizer_state_dict_matches_manifest(variant: str) -> None:
    manifest = _load(f"synthesizer_{variant}")
    ctor = manifest["constructor"]
    net = SynthesizerTrn(ctor["spec_channels"], ctor["segment_size"], **model_section(manifest["model_config"]).network_args())
    _check_against(net, manifest)


@pytest.mark.parametrize("spectral", [False, True])
def test_discriminator_state_dict_matches_manifest(spectral: bool) -> None:
    name = "multi_period_discriminator" + ("_spectral_norm" if spectral else "")
    manifest = _load(name)
    net = MultiPeriodDiscriminator(use_spectral_norm=spectral)
    _check_against(net, manifest)
    shapes = manifest.get("forward_shapes_for_input_1x1x10240")
    if shapes:
        y = torch.randn(1, 1, 10240)
        with torch.no_grad():
            y_d_r, _, fmap_r, _ = net(y, y)
        assert [list(t.shape) for t in y_d_r] == shapes["y_d_r"]
        assert [[list(t.shape) for t in fm] for fm in fmap_r] == shapes["fmap_r"]


def test_unknown_vocoder_falls_back_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    manifest = _load("synthesizer_tiny")
    cfg = dict(manifest["model_config"], vocoder_name="foo", upsample_initial_channel=32,
               inter_channels=16, hidden_channels=16, filter_channels=32, gin_channels=8, ssl_dim=16)
    with caplog.at_level("WARNING"):
        net = SynthesizerTrn(65, 20, **model_section(cfg).network_args())
    assert "unknown vocoder_name 'foo'" in caplog.text
    assert not hasattr(net.dec, "snakes")
