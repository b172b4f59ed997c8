"""`hubertsoft`: bshall's HuBERT-Soft state dict run through our HubertModel.

HuBERT-Soft is the fairseq base architecture under other names (conv0..conv6, feature_projection,
positional_embedding, PyTorch TransformerEncoderLayer with a packed q/k/v projection, `proj`), so the
file's keys are renamed to the fairseq layout instead of keeping a second copy of the network.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any, Mapping

import torch

from core.checkpoint import CheckpointError, UnsafeCheckpointError, load_state_dict_strict, safe_torch_load
from vencoder.encoder import SpeechEncoder, require_pretrain
from vencoder.hubert import HubertConfig, HubertModel

__all__ = ["HubertSoftEncoder", "build_hubert_soft", "hubert_soft_to_fairseq", "load_hubert_soft"]

PathLike = str | os.PathLike

_STRIDES = (5, 2, 2, 2, 2, 2, 2)  # fixed by the architecture, not stored in the file
_UNUSED_KEYS = ("masked_spec_embed", "label_embedding.weight")  # training only
_RENAMES = [  # (pattern, replacement) applied to each key, first match wins
    (r"^feature_extractor\.conv(\d+)\.weight$", r"feature_extractor.conv_layers.\1.0.weight"),
    (r"^feature_extractor\.norm0\.", "feature_extractor.conv_layers.0.2."),
    (r"^feature_projection\.norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^positional_embedding\.conv\.", "encoder.pos_conv.0."),
    (r"^norm\.", "encoder.layer_norm."),
    (r"^(encoder\.layers\.\d+\.)linear1\.", r"\1fc1."),
    (r"^(encoder\.layers\.\d+\.)linear2\.", r"\1fc2."),
    (r"^(encoder\.layers\.\d+\.)norm1\.", r"\1self_attn_layer_norm."),
    (r"^(encoder\.layers\.\d+\.)norm2\.", r"\1final_layer_norm."),
    (r"^proj\.", "final_proj."),
]


def hubert_soft_to_fairseq(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename a HuBERT-Soft state dict (without `module.`) to HubertModel keys; split the packed
    `in_proj_weight` / `in_proj_bias` ([3E, ...], rows q, k, v) into q/k/v projections."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key in _UNUSED_KEYS:
            continue
        packed = re.match(r"^(encoder\.layers\.\d+\.self_attn\.)in_proj_(weight|bias)$", key)
        if packed:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{packed[1]}{part}_proj.{packed[2]}"] = chunk
            continue
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def _shape(state: Mapping[str, Any], key: str, name: str) -> tuple[int, ...]:
    value = state.get(key)
    if not torch.is_tensor(value):
        raise CheckpointError(f"{name} is not a HuBERT-Soft state dict: it has no tensor {key!r} "
                              f"(keys start {list(state)[:3]})")
    return tuple(value.shape)


def build_hubert_soft(state: Mapping[str, torch.Tensor], name: str, num_heads: int = 12) -> HubertModel:
    """An unfilled HubertModel sized from a renamed HuBERT-Soft state dict (`hubert_soft_to_fairseq`).

    Raises:
        CheckpointError: keys missing or sizes that do not describe a HuBERT-Soft model (names `name`).
    """
    n_conv = sum(1 for k in state if re.match(r"^feature_extractor\.conv_layers\.\d+\.0\.weight$", k))
    if n_conv != len(_STRIDES):
        raise CheckpointError(f"{name}: expected {len(_STRIDES)} feature-extractor convs (conv0..conv6), "
                              f"found {n_conv}")
    convs = [_shape(state, f"feature_extractor.conv_layers.{i}.0.weight", name) for i in range(n_conv)]
    embed, _ = _shape(state, "post_extract_proj.weight", name)
    channels_v, per_group, kernel = _shape(state, "encoder.pos_conv.0.weight_v", name)
    layers = {int(m[1]) for k in state if (m := re.match(r"^encoder\.layers\.(\d+)\.", k))}
    cfg = HubertConfig(
        conv_feature_layers=repr([(c[0], c[2], s) for c, s in zip(convs, _STRIDES)]),
        extractor_mode="default", conv_bias=False, encoder_layers=len(layers), encoder_embed_dim=embed,
        encoder_ffn_embed_dim=_shape(state, "encoder.layers.0.fc1.weight", name)[0],
        encoder_attention_heads=num_heads, activation_fn="gelu", layer_norm_first=False,
        conv_pos=kernel, conv_pos_groups=max(channels_v // max(per_group, 1), 1))
    try:
        return HubertModel(cfg, final_dim=_shape(state, "final_proj.weight", name)[0])
    except ValueError as err:
        raise CheckpointError(f"{name}: unusable HuBERT-Soft sizes ({err})") from None


def load_hubert_soft(path: PathLike, num_heads: int = 12) -> HubertModel:
    """Build a HubertModel from a HuBERT-Soft file (CPU, float32, eval). Sizes come from the tensor
    shapes; the head count is not stored (12 in the real model).

    Raises:
        CheckpointError: not a HuBERT-Soft state dict, or tensors that do not fit together.
    """
    name = os.fspath(path)
    try:
        raw = safe_torch_load(name)  # a plain state dict: weights_only works
    except UnsafeCheckpointError as err:
        raise CheckpointError(f"{name} is not a HuBERT-Soft state dict (it pickles Python objects, as "
                              f"fairseq checkpoints for vec768l12 / vec256l9 do): {err}") from None
    if not isinstance(raw, Mapping) or not raw or not all(torch.is_tensor(v) for v in raw.values()):
        keys = list(raw)[:4] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"{name} is not a HuBERT-Soft state dict (a flat dict of tensors); found {keys}")
    if all(k.startswith("module.") for k in raw):  # saved from DistributedDataParallel
        raw = {k[len("module."):]: v for k, v in raw.items()}
    state = hubert_soft_to_fairseq({k: v.float() for k, v in raw.items()})
    model = build_hubert_soft(state, name, num_heads)
    load_state_dict_strict(model, state, source=f"{name} (HuBERT-Soft, keys renamed to the fairseq layout)")
    return model.eval()


class HubertSoftEncoder(SpeechEncoder):
    """`hubertsoft`: pad 40 zeros each side, 12 post-LN layers, then `proj` (768 -> 256).

    Args:
        path: e.g. `pretrain/hubert-soft-0d54a1f4.pt`.
        device: torch device; None = CUDA if available, else CPU.
        num_heads: attention heads (not stored in the file; 12 for the released model).
        what: description used when the file is missing.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None, num_heads: int = 12,
                 what: str = "HuBERT-Soft state dict") -> None:
        super().__init__(device)
        model = load_hubert_soft(require_pretrain(path, what), num_heads)
        self.model = model.to(self.device)
        self.dim = model.final_proj.out_features

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, floor(N / 320)] float32 (N >= 320)."""
        x = self.to_mono(wav)
        if x.shape[0] < 320:
            raise ValueError(f"audio too short for hubertsoft: {x.shape[0]} samples at 16 kHz, need >= 320")
        # (400 - 320) / 2 zeros per side centre the 400-sample receptive field on each 320-sample hop.
        x = torch.nn.functional.pad(x, (40, 40))
        return self.model.final_proj(self.model(x[None].to(self.device))).transpose(1, 2)
