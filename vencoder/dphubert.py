"""`dphubert`: DPHuBERT (structurally pruned HuBERT, torchaudio wav2vec2 layout) built from its stored config.

The file is `{"config": kwargs of DPHuBERT's wav2vec2_model(), "state_dict": ...}`. Pruning leaves
per-layer conv channels, head counts (of width `encoder_head_dim`), feed-forward sizes and removed
attention / feed-forward blocks; `feature_extractor.dummy_weight` scales the conv channels. Conv stack
and positional conv are `vencoder.hubert`'s; the file's conv keys are renamed to that layout on load.
Missing or mis-shaped tensors are errors, extra ones are logged; the model runs in eval mode.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import CheckpointError, load_state_dict_strict, safe_torch_load_sections
from vencoder.encoder import SpeechEncoder, require_pretrain
from vencoder.hubert import ConvFeatureExtractor, WeightNormConv1d

__all__ = ["DPHubertEncoder", "DPHubertModel", "PrunedFeatureExtractor", "dphubert_to_model_keys", "load_dphubert"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike

_REQUIRED = ("extractor_mode", "extractor_conv_layer_config", "encoder_embed_dim", "encoder_pos_conv_kernel",
             "encoder_pos_conv_groups", "encoder_num_layers", "encoder_use_attention", "encoder_use_feed_forward",
             "encoder_num_heads", "encoder_head_dim", "encoder_ff_interm_features", "encoder_layer_norm_first")
_PER_LAYER = ("encoder_use_attention", "encoder_use_feed_forward", "encoder_num_heads",
              "encoder_ff_interm_features")
_PRUNE_FLAGS = ("extractor_prune_conv_channels", "encoder_prune_attention_heads", "encoder_prune_attention_layer",
                "encoder_prune_feed_forward_intermediate", "encoder_prune_feed_forward_layer")
_EXTRACTOR_MODES = {"group_norm": "default", "layer_norm": "layer_norm"}  # torchaudio -> fairseq name


class PrunedFeatureExtractor(ConvFeatureExtractor):
    """HuBERT conv stack followed by the per-channel `dummy_weight` ([last conv channels])."""

    def __init__(self, layers: list[tuple[int, int, int]], mode: str, conv_bias: bool) -> None:
        super().__init__(layers, mode, conv_bias)
        self.dummy_weight = nn.Parameter(torch.ones(layers[-1][0]))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, C, floor((N - 400) / 320) + 1] for the standard strides."""
        return super().forward(wav) * self.dummy_weight[:, None]


class _PrunedAttention(nn.Module):
    """Self-attention of width heads x head_dim inside an E-wide model (q/k/v/out with bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]."""
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]

        q = split(self.q_proj(x) * self.head_dim ** -0.5)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, t, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class _Layer(nn.Module):
    """Encoder layer whose attention and/or feed-forward may be pruned away (None)."""

    def __init__(self, dim: int, heads: int, head_dim: int, ffn: int, use_attention: bool, use_ffn: bool,
                 layer_norm_first: bool) -> None:
        super().__init__()
        self.attention = _PrunedAttention(dim, heads, head_dim) if use_attention and heads > 0 else None
        self.layer_norm = nn.LayerNorm(dim)
        self.feed_forward = _FeedForward(dim, ffn) if use_ffn and ffn > 0 else None
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]; the norms apply even where their block was pruned."""
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.attention(self.layer_norm(x))
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.attention(x)
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class _PosConvEmbed(nn.Module):
    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = WeightNormConv1d(dim, kernel, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E] (an even kernel makes one extra frame, dropped)."""
        y = self.conv(x.transpose(1, 2))
        if self.conv.weight_v.shape[-1] % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class _Transformer(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        e = cfg["encoder_embed_dim"]
        self.pos_conv_embed = _PosConvEmbed(e, cfg["encoder_pos_conv_kernel"], cfg["encoder_pos_conv_groups"])
        self.layer_norm = nn.LayerNorm(e)
        self.layer_norm_first = bool(cfg["encoder_layer_norm_first"])
        self.layers = nn.ModuleList(
            _Layer(e, heads, cfg["encoder_head_dim"], ffn, use_attn, use_ffn, self.layer_norm_first)
            for use_attn, use_ffn, heads, ffn in zip(*(cfg[k] for k in _PER_LAYER)))


class _FeatureProjection(nn.Module):
    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(channels)
        self.projection = nn.Linear(channels, dim)


class _Encoder(nn.Module):
    def __init__(self, cfg: Mapping[str, Any], channels: int) -> None:
        super().__init__()
        self.feature_projection = _FeatureProjection(channels, cfg["encoder_embed_dim"])
        self.transformer = _Transformer(cfg)


class DPHubertModel(nn.Module):
    """DPHuBERT for inference, built from the file's `config`; keys as `dphubert_to_model_keys` gives them."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        convs = [tuple(int(v) for v in c) for c in cfg["extractor_conv_layer_config"]]
        self.normalize_waveform = bool(cfg.get("normalize_waveform", False))
        self.feature_extractor = PrunedFeatureExtractor(
            convs, _EXTRACTOR_MODES[cfg["extractor_mode"]], bool(cfg.get("extractor_conv_bias", False)))
        self.encoder = _Encoder(cfg, convs[-1][0])
        aux = cfg.get("aux_num_out")
        self.aux = nn.Linear(cfg["encoder_embed_dim"], aux) if aux else None
        self.dim = aux or cfg["encoder_embed_dim"]

    def encoder_input(self, features: torch.Tensor) -> torch.Tensor:
        """Conv features [B, C, T] (after dummy_weight) -> transformer input [B, T, E]."""
        proj = self.encoder.feature_projection
        return proj.projection(proj.layer_norm(features.transpose(1, 2)))

    def forward(self, wav: torch.Tensor, output_layer: int | None = None) -> torch.Tensor:
        """[B, N] 16 kHz -> [B, T, dim].

        `output_layer = n` (1-based) returns layer n's output with no further norm or `aux`; None runs all
        layers, then the final LayerNorm of pre-LN models and `aux` if the file has one (4.1's output).
        """
        if self.normalize_waveform:
            wav = F.layer_norm(wav, wav.shape[-1:])
        tr = self.encoder.transformer
        x = self.encoder_input(self.feature_extractor(wav))
        x = x + tr.pos_conv_embed(x)
        if not tr.layer_norm_first:
            x = tr.layer_norm(x)
        for i, layer in enumerate(tr.layers):
            x = layer(x)
            if output_layer is not None and i + 1 == output_layer:
                return x
        if tr.layer_norm_first:
            x = tr.layer_norm(x)
        return self.aux(x) if self.aux is not None else x


def dphubert_to_model_keys(state: Mapping[str, Any], extractor_mode: str) -> dict[str, Any]:
    """Rename the file's torchaudio conv keys (`conv_layers.{i}.conv`, `.layer_norm`) to the HuBERT
    layout of `PrunedFeatureExtractor` (`conv_layers.{i}.0`, `.2` GroupNorm / `.2.1` LayerNorm)."""
    norm = ".2." if _EXTRACTOR_MODES.get(extractor_mode) == "default" else ".2.1."
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = re.sub(r"^(feature_extractor\.conv_layers\.\d+)\.conv\.", r"\1.0.", key)
        key = re.sub(r"^(feature_extractor\.conv_layers\.\d+)\.layer_norm\.", rf"\1{norm}", key)
        out[key] = value
    return out


def _check_config(cfg: Mapping[str, Any], name: str) -> None:
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise CheckpointError(f"{name}: DPHuBERT config lacks {', '.join(missing)}")
    if "encoder_remaining_heads" in cfg:
        raise CheckpointError(f"{name} is a pruned WavLM (config has encoder_remaining_heads); dphubert supports "
                              "the pruned HuBERT (DPHuBERT-sp0.75.pth) only")
    if cfg["extractor_mode"] not in _EXTRACTOR_MODES:
        raise CheckpointError(f"{name}: extractor_mode {cfg['extractor_mode']!r} is not one of "
                              f"{', '.join(_EXTRACTOR_MODES)}")
    pruning = [k for k in _PRUNE_FLAGS if cfg.get(k)]
    if pruning:
        raise CheckpointError(f"{name} is an unfinished DPHuBERT training checkpoint ({', '.join(pruning)} set); "
                              "use the final pruned model file")
    bad = [k for k in _PER_LAYER if len(cfg[k]) != cfg["encoder_num_layers"]]
    if bad:
        raise CheckpointError(f"{name}: {', '.join(bad)} must list {cfg['encoder_num_layers']} layers "
                              "(encoder_num_layers)")


def load_dphubert(path: PathLike) -> DPHubertModel:
    """Build and fill a DPHubertModel from `{"config", "state_dict"}` (CPU, float32, eval).

    Raises:
        CheckpointError: not a DPHuBERT file, an unsupported config, or missing / mis-shaped tensors.
    """
    name = os.fspath(path)
    # DPHuBERT saves plain dicts, lists and tensors.
    ckpt = safe_torch_load_sections(name, "a DPHuBERT checkpoint", ("config", "state_dict"))
    cfg = ckpt["config"]
    _check_config(cfg, name)
    try:
        model = DPHubertModel(cfg)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{name}: unusable DPHuBERT config ({err})") from None
    state = dphubert_to_model_keys(ckpt["state_dict"], cfg["extractor_mode"])
    known = set(model.state_dict())
    extra = [k for k in state if k not in known]
    if extra:  # 4.1 ignores them too (strict=False)
        logger.warning("%s: %d tensors not used by the DPHuBERT model: %s", name, len(extra), ", ".join(extra[:8]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in known}
    load_state_dict_strict(model, state, source=f"{name} (DPHuBERT model as described by its config)")
    return model.eval()


class DPHubertEncoder(SpeechEncoder):
    """`dphubert`: last layer of the pruned model, `[1, 768, frames]` for DPHuBERT-sp0.75.

    Args:
        path: the checkpoint, e.g. `pretrain/DPHuBERT-sp0.75.pth`.
        device: torch device; None = CUDA if available, else CPU.
        what: description used when the file is missing.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None,
                 what: str = "DPHuBERT checkpoint") -> None:
        super().__init__(device)
        model = load_dphubert(require_pretrain(path, what))
        self.model = model.to(self.device)
        self.dim = model.dim

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, floor((N - 400) / 320) + 1] float32 (N >= 400)."""
        x = self.to_mono(wav)
        if x.shape[0] < 400:
            raise ValueError(f"audio too short for dphubert: {x.shape[0]} samples at 16 kHz, need >= 400")
        return self.model(x[None].to(self.device)).transpose(1, 2)
