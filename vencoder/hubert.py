"""Our HuBERT / ContentVec network (fairseq state-dict names) and the fairseq-checkpoint encoders.

One network serves `vec768l12`, `vec256l9`, `cnhubertlarge` and, after a key rename, `hubertsoft`:
conv feature extractor -> LayerNorm + projection -> weight-normed positional conv -> post-LN or pre-LN
transformer layers, read out after a chosen layer.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import CheckpointError, load_state_dict_strict
from vencoder.encoder import SpeechEncoder, require_pretrain
from vencoder.fairseq_ckpt import load_fairseq_checkpoint

__all__ = ["FairseqHubertEncoder", "HubertConfig", "HubertModel", "parse_conv_layers"]

PathLike = str | os.PathLike
ConvSpec = tuple[int, int, int]  # (channels, kernel, stride)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
# Present in fairseq HuBERT checkpoints, used only for pre-training.
_TRAINING_ONLY_KEYS = ("label_embs_concat", "mask_emb")


def parse_conv_layers(spec: str) -> list[ConvSpec]:
    """Evaluate fairseq's `conv_feature_layers` string without `eval`.

    Only list/tuple literals of ints, `+` between lists and `list * int` are accepted, e.g.
    `"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"` -> 7 (channels, kernel, stride) triples.
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported element {ast.dump(node)[:60]}")

    try:
        layers = value(ast.parse(spec.strip(), mode="eval").body)
        if not (isinstance(layers, list) and layers
                and all(isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t)
                        for t in layers)):
            raise ValueError("not a non-empty list of (channels, kernel, stride) triples")
    except (SyntaxError, ValueError, TypeError) as err:
        raise ValueError(f"cannot read conv_feature_layers {spec!r}: {err}") from None
    return [tuple(t) for t in layers]  # type: ignore[misc]


@dataclass
class HubertConfig:
    """Architecture of a HuBERT-style model; field names and defaults follow fairseq's HubertConfig."""

    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    extractor_mode: str = "default"  # "default": GroupNorm after conv 0; "layer_norm": LayerNorm after each
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False  # False: post-LN (base / ContentVec); True: pre-LN (large)
    conv_pos: int = 128
    conv_pos_groups: int = 16

    @classmethod
    def from_dict(cls, model_cfg: Mapping[str, Any]) -> "HubertConfig":
        """Pick the architecture fields from fairseq's `cfg["model"]` (or old `args`); absent -> default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in model_cfg.items() if k in known and v is not None})


class _TransposeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class ConvFeatureExtractor(nn.Module):
    """Unpadded conv stack; module tree mirrors fairseq (`conv_layers.{i}.0` conv, `.2` norm)."""

    def __init__(self, layers: list[ConvSpec], mode: str, conv_bias: bool) -> None:
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {mode!r}")
        blocks = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(layers):
            mods: list[nn.Module] = [nn.Conv1d(in_ch, ch, k, stride=s, bias=conv_bias), nn.Identity()]
            if mode == "layer_norm":  # LayerNorm over channels, hence the transposes around it
                mods.append(nn.Sequential(_TransposeLast(), nn.LayerNorm(ch), _TransposeLast()))
            elif i == 0:  # one group per channel: each channel normalised over time
                mods.append(nn.GroupNorm(ch, ch))
            mods.append(nn.GELU())
            blocks.append(nn.Sequential(*mods))
            in_ch = ch
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, C, T] with T = floor((N - 400) / 320) + 1 for the standard stack."""
        x = wav[:, None]
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv1d(nn.Module):
    """Grouped conv whose weight is `weight_g * weight_v / ||weight_v||`, the norm taken per kernel tap
    (legacy weight norm with dim=2, so `weight_g` is [1, 1, K])."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.zeros(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, C, T + 1 - K % 2] (padding K // 2)."""
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=weight.shape[-1] // 2, groups=self.groups)


class _TrimLast(nn.Module):
    # An even kernel with padding K//2 yields one extra frame; the original drops the last one.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1]


class SelfAttention(nn.Module):
    """Unmasked multi-head self-attention with separate q/k/v/out projections (all with bias)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]."""
        b, t, e = x.shape
        hd = e // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, hd).transpose(1, 2)  # [B, H, T, hd]

        q = split(self.q_proj(x) * hd ** -0.5)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-2, -1)
        bias = self.score_bias(x, split(x))
        if bias is not None:
            scores = scores + bias
        attn = torch.softmax(scores, dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, t, e))

    def score_bias(self, x: torch.Tensor, x_heads: torch.Tensor) -> torch.Tensor | None:
        """Additive attention-score bias [B or 1, H, T, T]; none here (WavLM adds position terms).

        x: input [B, T, E]; x_heads: the same split per head [B, H, T, E/H].
        """
        return None


class EncoderLayer(nn.Module):
    """Transformer layer; post-LN `x = LN(x + f(x))` or pre-LN `x = x + f(LN(x))`."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, layer_norm_first: bool, activation: str) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation_fn {activation!r} not supported (one of {sorted(_ACTIVATIONS)})")
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first
        self.activation = _ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]."""
        def ffn(y: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.activation(self.fc1(y)))

        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x))
            return x + ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + ffn(x))


class TransformerEncoder(nn.Module):
    """Positional conv + layers; `encoder.*` keys of fairseq."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        e = cfg.encoder_embed_dim
        pos: list[nn.Module] = [WeightNormConv1d(e, cfg.conv_pos, cfg.conv_pos_groups)]
        if cfg.conv_pos % 2 == 0:
            pos.append(_TrimLast())
        self.pos_conv = nn.Sequential(*pos, nn.GELU())
        self.layer_norm = nn.LayerNorm(e)
        self.layers = nn.ModuleList(
            EncoderLayer(e, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, cfg.layer_norm_first,
                         cfg.activation_fn)
            for _ in range(cfg.encoder_layers))
        self.layer_norm_first = cfg.layer_norm_first

    def forward(self, x: torch.Tensor, output_layer: int | None = None) -> torch.Tensor:
        """[B, T, E] -> [B, T, E].

        `output_layer = n` (1-based) returns the output of layer n with no further norm (all layers
        when n exceeds their count); None runs all layers and, for pre-LN models, the final LayerNorm.
        """
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if output_layer is not None and i + 1 == output_layer:
                return x
        if output_layer is None and self.layer_norm_first:
            x = self.layer_norm(x)
        return x


class HubertModel(nn.Module):
    """fairseq HubertModel for inference: state-dict names match the checkpoints (minus training-only
    `label_embs_concat`, `mask_emb`). `final_proj` exists when `final_dim` > 0."""

    def __init__(self, cfg: HubertConfig, final_dim: int = 0) -> None:
        super().__init__()
        conv_layers = parse_conv_layers(cfg.conv_feature_layers)
        channels = conv_layers[-1][0]
        self.cfg = cfg
        self.feature_extractor = ConvFeatureExtractor(conv_layers, cfg.extractor_mode, cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(channels)
        # fairseq only has a projection when the conv channels differ from the embedding size.
        self.post_extract_proj = (nn.Linear(channels, cfg.encoder_embed_dim)
                                  if channels != cfg.encoder_embed_dim else None)
        self.encoder = TransformerEncoder(cfg)
        self.final_proj = nn.Linear(cfg.encoder_embed_dim, final_dim) if final_dim > 0 else None

    def encoder_input(self, features: torch.Tensor) -> torch.Tensor:
        """Conv features [B, C, T] -> transformer input [B, T, E] (LayerNorm, projection)."""
        x = self.layer_norm(features.transpose(1, 2))
        return self.post_extract_proj(x) if self.post_extract_proj is not None else x

    def forward(self, wav: torch.Tensor, output_layer: int | None = None) -> torch.Tensor:
        """[B, N] 16 kHz -> [B, T, E] hidden states (see `TransformerEncoder.forward` for output_layer)."""
        return self.encoder(self.encoder_input(self.feature_extractor(wav)), output_layer)


def _fairseq_model_cfg(ckpt: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The model section of a fairseq checkpoint: `cfg["model"]` (2021+) or the flat old `args`."""
    cfg, args = ckpt.get("cfg"), ckpt.get("args")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        model_cfg = dict(cfg["model"])
    elif cfg is None and isinstance(args, Mapping):
        model_cfg = dict(args)
    else:
        raise CheckpointError(f"{name} has no fairseq model configuration (`cfg['model']` or `args`); "
                              "it is not a fairseq HuBERT/ContentVec checkpoint")
    kind = model_cfg.get("_name", model_cfg.get("arch"))
    if kind is not None and not str(kind).startswith("hubert"):
        raise CheckpointError(f"{name} is a fairseq {kind!r} model, not a HuBERT/ContentVec checkpoint")
    return model_cfg


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:3]
        flat = bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
        hint = " - a plain state dict (HuBERT-Soft files look like this)" if flat else ""
        return f"a dict with keys {keys}{'...' if len(obj) > 3 else ''}{hint}"
    return f"a {type(obj).__name__}"


def load_hubert_checkpoint(path: PathLike) -> HubertModel:
    """Build and fill a HubertModel from a fairseq checkpoint file (CPU, float32, eval mode).

    Raises:
        CheckpointError: not a fairseq HuBERT checkpoint, or its tensors do not fit its own cfg (the
            message names the file and the differing keys / shapes).
        UnsafeCheckpointError: the pickle needs objects outside the allow-list (nothing executed).
    """
    name = os.fspath(path)
    ckpt = load_fairseq_checkpoint(name)
    state = ckpt.get("model")
    if not isinstance(state, Mapping) or not ("cfg" in ckpt or "args" in ckpt):
        raise CheckpointError(f"{name} is not a fairseq HuBERT/ContentVec checkpoint (expected a dict with "
                              f"'cfg' or 'args' and 'model'; found {_describe(ckpt)})")
    cfg = HubertConfig.from_dict(_fairseq_model_cfg(ckpt, name))
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in state.items() if k not in _TRAINING_ONLY_KEYS}
    proj = state.get("final_proj.weight")
    try:
        model = HubertModel(cfg, final_dim=proj.shape[0] if torch.is_tensor(proj) else 0)
    except ValueError as err:
        raise CheckpointError(f"{name}: unusable model configuration ({err})") from None
    load_state_dict_strict(model, state, source=f"{name} (HuBERT model as described by its cfg)")
    return model.eval()


class FairseqHubertEncoder(SpeechEncoder):
    """`vec768l12` / `vec256l9` / `cnhubertlarge`: a fairseq HuBERT or ContentVec checkpoint.

    Args:
        path: the checkpoint, e.g. `pretrain/checkpoint_best_legacy_500.pt`.
        device: torch device; None = CUDA if available, else CPU.
        output_layer: 1-based layer to read out (12 for vec768l12, 9 for vec256l9); None = all layers
            plus the final LayerNorm of pre-LN models (cnhubertlarge).
        use_final_proj: apply the checkpoint's `final_proj` (vec256l9: 768 -> 256).
        what: description used when the file is missing.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None, output_layer: int | None = 12,
                 use_final_proj: bool = False, what: str = "fairseq HuBERT/ContentVec checkpoint") -> None:
        super().__init__(device)
        name = require_pretrain(path, what)
        model = load_hubert_checkpoint(name)
        if use_final_proj and model.final_proj is None:
            raise CheckpointError(f"{name} has no final_proj weights, which this encoder applies")
        self.model = model.to(self.device)
        self.output_layer = output_layer
        self.use_final_proj = use_final_proj
        self.dim = model.final_proj.out_features if use_final_proj else model.cfg.encoder_embed_dim

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, floor((N - 400) / 320) + 1] float32 (N >= 400)."""
        x = self.to_mono(wav)
        if x.shape[0] < 400:
            raise ValueError(f"audio too short for the speech encoder: {x.shape[0]} samples at 16 kHz, need >= 400")
        h = self.model(x[None].to(self.device), self.output_layer)
        if self.use_final_proj:
            h = self.model.final_proj(h)
        return h.transpose(1, 2)
