"""Mixed-precision training: the one rule both trainers follow, and So-VITS steps under autocast on the CPU.

The steps run the code a GPU user's `fp16_run: true` takes (autocast around the networks, GradScaler,
unscaled gradient norms, losses in fp32), on a micro model, so they run anywhere.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bench import train_step
from bench.synth_infer import TINY_MODEL
from core import train_support
from core.config import load_config
from core.train_support import mixed_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    assert mixed_precision("fp32", CPU, "train.x", said.append) is None
    assert mixed_precision("fp16", CPU, "train.x", said.append) is None
    assert said == ["train.x fp16 is not used on the CPU; training in fp32 (bf16 works on CPUs with native bf16)"]
    said.clear()
    monkeypatch.setattr(train_support, "bf16_problem", lambda device: None)
    assert mixed_precision("bf16", CPU, "train.x", said.append) is torch.bfloat16
    assert mixed_precision("bf16", CUDA, "train.x", said.append) is torch.bfloat16
    assert mixed_precision("fp16", CUDA, "train.x", said.append) is torch.float16
    assert said == []
    monkeypatch.setattr(train_support, "bf16_problem", lambda device: "no native bf16 here")
    assert mixed_precision("bf16", CPU, "train.x", said.append) is None
    assert said == ["train.x bf16 is not used here: no native bf16 here; training in fp32"]
    said.clear()
    assert mixed_precision("bf16", CUDA, "train.x", said.append) is torch.bfloat16  # a GPU trains as asked
    assert said == ['train.x bf16: no native bf16 here; training in bf16 as asked ("fp16" is likely faster here)']


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = json.loads(train_step.CONFIGS["default"].read_text())
    raw["model"] = {**copy.deepcopy(TINY_MODEL), "n_speakers": 2}
    raw["spk"] = {"a": 0, "b": 1}
    raw["train"].update(segment_size=2048, discriminator_width=0.03125)
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(raw))
    return path


def _trainer(config: Path, tmp_path: Path, name: str, **train: object):
    hps = load_config(config)
    for key, value in train.items():
        hps.train[key] = value
    torch.manual_seed(1234)  # the same initial weights in every trainer
    return train_step.batch_trainer(hps, str(tmp_path / name), CPU)


def _step(trainer, batch: tuple, log: bool = False) -> dict:
    torch.manual_seed(99)  # the same random crop and dropout in every compared step
    return trainer.train_step(batch, log=log)


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_bf16_run_on_a_cpu_with_native_bf16(micro_config: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    batch = train_step.make_batch(load_config(micro_config))
    reference = _trainer(micro_config, tmp_path, "fp32")
    assert reference.amp_dtype is None
    expect = _step(reference, batch)
    monkeypatch.setattr(train_support, "bf16_problem", lambda device: None)
    trainer = _trainer(micro_config, tmp_path, "bf16", fp16_run=True, half_type="bf16")
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    g, d = _weights(trainer.net_g), _weights(trainer.net_d)
    out = _step(trainer, batch, log=True)
    assert _changed(g, trainer.net_g) and _changed(d, trainer.net_d)
    assert all(p.dtype == torch.float32 for p in trainer.net_g.parameters())  # autocast, not a bf16 model
    for key in ("d", "g", "mel", "kl", "g_total"):
        assert out[key].dtype == torch.float32, key
        assert float(out[key]) == pytest.approx(float(expect[key]), rel=0.1), key
    assert torch.isfinite(out["grad_norm_g"]) and torch.isfinite(out["grad_norm_d"])
    # Without native bf16 the same config trains in fp32, exactly as the reference did.
    monkeypatch.setattr(train_support, "bf16_problem", lambda device: "no native bf16")
    slow = _trainer(micro_config, tmp_path, "bf16-slow", fp16_run=True, half_type="bf16")
    assert slow.amp_dtype is None
    assert float(_step(slow, batch)["g_total"]) == float(expect["g_total"])


def test_fp16_steps_with_grad_scaler(micro_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 autocast + GradScaler, built by the Trainer as on a GPU: an overflowing step changes no weight
    and halves the scale; a step at a safe scale trains with finite, unscaled gradient norms."""
    batch = train_step.make_batch(load_config(micro_config))
    expect = _step(_trainer(micro_config, tmp_path, "fp32"), batch)
    monkeypatch.setattr("training.loop.mixed_precision", lambda *args: torch.float16)
    trainer = _trainer(micro_config, tmp_path, "fp16", fp16_run=True)
    assert trainer.amp_dtype is torch.float16 and trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60)  # every fp16 gradient overflows
    g, d = _weights(trainer.net_g), _weights(trainer.net_d)
    trainer.train_step(batch, log=False)
    assert not _changed(g, trainer.net_g) and not _changed(d, trainer.net_d)
    assert trainer.scaler.get_scale() == 2.0 ** 59
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    out = _step(trainer, batch, log=True)
    assert _changed(g, trainer.net_g) and _changed(d, trainer.net_d)
    assert trainer.scaler.get_scale() == 1.0
    assert torch.isfinite(out["grad_norm_g"]) and torch.isfinite(out["grad_norm_d"])
    for key in ("d", "g", "mel", "g_total"):
        assert float(out[key]) == pytest.approx(float(expect[key]), rel=0.05), key
