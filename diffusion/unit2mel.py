"""Unit2Mel (units + F0 + loudness [+ speaker, key shift] -> mel by Gaussian diffusion) and its file loaders."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from core.checkpoint import CheckpointError, CheckpointNotFoundError, load_state_dict_strict, safe_torch_load
from core.config import ConfigError, ConfigNotFoundError, HParams, PathLike, load_config
from diffusion.diffusion import GaussianDiffusion, NoiseFn, effective_k_step_max
from diffusion.vocoder import Vocoder
from diffusion.wavenet import WaveNet
from vdecoder.nsf_hifigan.models import VocoderNotFoundError

__all__ = ["Unit2Mel", "build_unit2mel", "load_diffusion_model", "load_model_vocoder", "read_diffusion_checkpoint"]


class Unit2Mel(nn.Module):
    """Conditioning embeddings plus the diffusion decoder: input_channel = unit channels C, out_dims = mel
    bins M, n_layers / n_chans / n_hidden = WaveNet depth, residual width, condition width H; k_step_max <= 0
    or >= timesteps: all steps trained (full diffusion possible)."""

    def __init__(self, input_channel: int, n_spk: int, use_pitch_aug: bool = False, out_dims: int = 128,
                 n_layers: int = 20, n_chans: int = 384, n_hidden: int = 256, timesteps: int = 1000,
                 k_step_max: int = 1000) -> None:
        super().__init__()
        self.input_channel = input_channel
        self.n_spk = n_spk
        self.timesteps = int(timesteps)
        self.k_step_max = effective_k_step_max(k_step_max, timesteps)
        self.unit_embed = nn.Linear(input_channel, n_hidden)
        self.f0_embed = nn.Linear(1, n_hidden)
        self.volume_embed = nn.Linear(1, n_hidden)
        self.aug_shift_embed = nn.Linear(1, n_hidden, bias=False) if use_pitch_aug else None
        self.spk_embed = nn.Embedding(n_spk, n_hidden) if n_spk > 1 else None
        self.decoder = GaussianDiffusion(WaveNet(out_dims, n_layers, n_chans, n_hidden), out_dims=out_dims,
                                         timesteps=timesteps, k_step=self.k_step_max)
        # Speaker table [S, H] for per-frame mixing, filled by init_spkmix; not part of checkpoints.
        self.register_buffer("speaker_map", None, persistent=False)

    def init_spkmix(self, n_spk: int) -> None:
        """Freeze the first n_spk speaker embeddings as `speaker_map` [n_spk, H] (no-op with one speaker)."""
        if self.spk_embed is None:
            return
        if not 1 <= n_spk <= self.n_spk:
            raise ValueError(f"speaker mix over {n_spk} speakers, but the diffusion model has {self.n_spk}")
        ids = torch.arange(n_spk, device=self.spk_embed.weight.device)
        self.speaker_map = self.spk_embed(ids).detach()

    def _speaker(self, x: Tensor, spk_id: Tensor | None, spk_mix_dict: Mapping[int | str, float] | None) -> Tensor:
        """Speaker term for the condition x [B, T, H] (zero when the model has one speaker)."""
        if self.spk_embed is None:
            return x
        if spk_mix_dict is not None:
            for key, weight in spk_mix_dict.items():
                ids = torch.tensor([[int(key)]], dtype=torch.long, device=x.device)
                x = x + weight * self.spk_embed(ids)
            return x
        if spk_id is None:
            raise ValueError(f"the diffusion model has {self.n_spk} speakers: give spk_id [B, 1] or spk_mix_dict")
        if spk_id.dim() == 2 and spk_id.shape[1] > 1:
            # Per-frame mix weights [T, S] (as Svc passes them for -usm): a weighted sum of the table.
            if self.speaker_map is None:
                raise ValueError("per-frame speaker mixing needs init_spkmix(n_spk) first")
            weights = spk_id.to(self.speaker_map.dtype)
            if weights.shape[0] != x.shape[1] or weights.shape[1] != self.speaker_map.shape[0]:
                raise ValueError(f"speaker mix weights {list(weights.shape)} do not fit {x.shape[1]} frames "
                                 f"x {self.speaker_map.shape[0]} speakers")
            return x + torch.matmul(weights, self.speaker_map).unsqueeze(0)
        return x + self.spk_embed(spk_id.long().reshape(-1, 1))

    def embed(self, units: Tensor, f0: Tensor, volume: Tensor, spk_id: Tensor | None = None,
              spk_mix_dict: Mapping[int | str, float] | None = None, aug_shift: Tensor | None = None) -> Tensor:
        """The condition [B, T, H]: units [B, T, C], f0 [B, T, 1] Hz, volume [B, T, 1], spk_id [B, 1]
        (or mix weights [T, S] after init_spkmix), aug_shift [B, 1, 1] semitones."""
        x = self.unit_embed(units) + self.f0_embed((1 + f0 / 700).log()) + self.volume_embed(volume)
        x = self._speaker(x, spk_id, spk_mix_dict)
        if self.aug_shift_embed is not None and aug_shift is not None:
            x = x + self.aug_shift_embed(aug_shift / 5)
        return x

    def forward(self, units: Tensor, f0: Tensor, volume: Tensor, spk_id: Tensor | None = None,
                spk_mix_dict: Mapping[int | str, float] | None = None, aug_shift: Tensor | None = None,
                gt_spec: Tensor | None = None, infer: bool = True, infer_speedup: int = 10,
                method: str | None = "dpm-solver", k_step: int = 300, use_tqdm: bool = True, *,
                t: Tensor | None = None, noise_fn: NoiseFn | None = None) -> Tensor:
        """Training loss (infer=False) or mel [B, T, M]; the other arguments as in `GaussianDiffusion.forward`."""
        cond = self.embed(units, f0, volume, spk_id, spk_mix_dict, aug_shift)
        return self.decoder(cond, gt_spec=gt_spec, infer=infer, infer_speedup=infer_speedup, method=method,
                            k_step=k_step, use_tqdm=use_tqdm, t=t, noise_fn=noise_fn)


def _describe_state(state: Mapping[str, Tensor]) -> dict[str, object]:
    """Config values a diffusion state dict was built with (None where the key is absent)."""
    def shape(key: str, dim: int) -> int | None:
        value = state.get(key)
        return int(value.shape[dim]) if isinstance(value, Tensor) and value.dim() > dim else None

    layers = {int(m.group(1)) for k in state
              if (m := re.match(r"decoder\.denoise_fn\.residual_layers\.(\d+)\.", k))}
    return {
        "data.encoder_out_channels": shape("unit_embed.weight", 1),
        "model.n_hidden": shape("unit_embed.weight", 0),
        "model.n_spk": shape("spk_embed.weight", 0) or 1,
        "model.use_pitch_aug": "aug_shift_embed.weight" in state,
        "model.n_layers": len(layers),
        "model.n_chans": shape("decoder.denoise_fn.input_projection.weight", 0),
        "model.timesteps": shape("decoder.betas", 0),
        "vocoder num_mels": shape("decoder.denoise_fn.input_projection.weight", 1),
    }


def read_diffusion_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, object]:
    """A `model_<step>.pt` dict; CheckpointError unless it holds a 'model' state dict and a valid 'global_step'."""
    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        found = f"keys {', '.join(map(str, ckpt))}" if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a diffusion checkpoint {{'global_step', 'model'}} ({found})")
    step = ckpt.get("global_step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: 'global_step' must be a non-negative integer, got {step!r}")
    return dict(ckpt)


def _read_config(model_path: Path, config_path: PathLike | None) -> tuple[HParams, Path]:
    config_file = Path(config_path) if config_path is not None else model_path.parent / "config.yaml"
    if not config_file.is_file():
        hint = "" if config_path is not None else " (looked next to the model; give the config path, -dc)"
        raise ConfigNotFoundError(f"diffusion config {config_file} not found{hint}", str(config_file))
    return load_config(config_file), config_file


def build_unit2mel(args: HParams, out_dims: int, config_file: PathLike = "diffusion.yaml") -> Unit2Mel:
    """A fresh Unit2Mel from the `data`/`model` sections of a diffusion config; out_dims = vocoder mel bins."""
    try:
        return Unit2Mel(int(args.data.encoder_out_channels), int(args.model.n_spk), bool(args.model.use_pitch_aug),
                        out_dims, int(args.model.n_layers), int(args.model.n_chans), int(args.model.n_hidden),
                        int(args.model.timesteps), int(args.model.k_step_max))
    except (AttributeError, KeyError) as err:
        raise ConfigError(f"{err.args[0] if err.args else err}", str(config_file)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{config_file}: invalid diffusion model settings: {err}", str(config_file)) from None


def _load(model_path: Path, args: HParams, config_file: Path, out_dims: int,
          device: str | torch.device) -> Unit2Mel:
    """Unit2Mel built from the config, strictly loaded from `model_path`, in eval mode on `device`."""
    model = build_unit2mel(args, out_dims, config_file)
    if not model_path.is_file():
        raise CheckpointNotFoundError(f"diffusion model {model_path} not found")
    state = read_diffusion_checkpoint(model_path, device)["model"]
    try:
        load_state_dict_strict(model, state, source=str(model_path))
    except CheckpointError as err:
        found, wanted = _describe_state(state), _describe_state(model.state_dict())
        diffs = [f"{key}: model file {found[key]}, config {wanted[key]}" for key in wanted
                 if found[key] is not None and found[key] != wanted[key]]
        if not diffs:
            raise
        raise CheckpointError(f"diffusion model {model_path} does not match its config {config_file}: "
                              + "; ".join(diffs) + f" (details: {err})") from None
    return model.to(device).eval()


def load_diffusion_model(model_path: PathLike, device: str | torch.device = "cpu",
                         config_path: PathLike | None = None, out_dims: int = 128) -> tuple[Unit2Mel, HParams]:
    """Unit2Mel of a train_diff.py checkpoint (strict, eval mode) and its config (default: `config.yaml`
    beside it); out_dims = the vocoder's num_mels. Raises ConfigError / CheckpointError (a mismatch names
    the config fields that disagree with the file), or their NotFound variants."""
    path = Path(model_path)
    args, config_file = _read_config(path, config_path)
    return _load(path, args, config_file, out_dims, device), args


def load_model_vocoder(model_path: PathLike, device: str | torch.device = "cpu",
                       config_path: PathLike | None = None) -> tuple[Unit2Mel, Vocoder, HParams]:
    """4.1's loader: (Unit2Mel in eval mode, Vocoder(vocoder.type, vocoder.ckpt), config HParams)."""
    path = Path(model_path)
    args, config_file = _read_config(path, config_path)
    try:
        vocoder = Vocoder(str(args.vocoder.type), str(args.vocoder.ckpt), device=device)
    except VocoderNotFoundError as err:
        raise VocoderNotFoundError(f"{err} (vocoder.ckpt in {config_file})") from None
    except (AttributeError, KeyError) as err:
        raise ConfigError(f"{err.args[0] if err.args else err}", str(config_file)) from None
    return _load(path, args, config_file, vocoder.dimension, device), vocoder, args
