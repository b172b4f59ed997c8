"""`wavlmbase+`: Microsoft's WavLM (Base+) checkpoint run through our HuBERT network.

WavLM is fairseq HuBERT (same key names) plus a bucketed relative position bias in the attention,
gated per query by the layer's input. The model is a `HubertModel` whose attentions are
`GatedRelativeAttention`. File layout: `{"cfg": dict of WavLM config fields, "model": state dict}`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import CheckpointError, UnsafeCheckpointError, load_state_dict_strict, safe_torch_load
from vencoder.encoder import SpeechEncoder, require_pretrain
from vencoder.fairseq_ckpt import load_fairseq_checkpoint
from vencoder.hubert import HubertConfig, HubertModel, SelfAttention

__all__ = ["GatedRelativeAttention", "WavLMConfig", "WavLMEncoder", "build_wavlm", "load_wavlm",
           "relative_position_buckets"]

PathLike = str | os.PathLike
_TRAINING_ONLY_KEYS = ("mask_emb",)
_GATE_UNITS = 8  # grep_linear outputs, read as 2 gates x 4 summed units


@dataclass
class WavLMConfig(HubertConfig):
    """HubertConfig plus WavLM's fields; defaults of the absent ones follow WavLM's own config class."""

    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    normalize: bool = False  # layer-norm the whole waveform first


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device: torch.device | str = "cpu") -> torch.Tensor:
    """Bidirectional log-spaced bucket of every (query i, key j) pair: [T, T] int64.

    Half the buckets are for keys after the query; within a half, distances below a quarter of
    `num_buckets` get their own bucket and longer ones share log-spaced buckets up to `max_distance`.
    """
    pos = torch.arange(length, device=device)
    rel = pos[None, :] - pos[:, None]  # key minus query
    half = num_buckets // 2
    exact = half // 2
    dist = rel.abs()
    # Same operation order as the original (float32 log, then truncation) so boundary cases agree.
    far = exact + (torch.log(dist.clamp(min=exact).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).to(torch.long)
    far = far.clamp(max=half - 1)
    return (rel > 0).long() * half + torch.where(dist < exact, dist, far)


class GatedRelativeAttention(SelfAttention):
    """WavLM attention: `SelfAttention` plus `gate[h, i] * bias[h, i, j]` added to the logits.

    The raw bias comes from the bucket table `relative_attention_bias` ([num_buckets, heads]) that only
    layer 0 stores; the other layers read layer 0's table through `share_table_of`. The gate is computed
    from this layer's input by `grep_linear` and `grep_a` (absent when `gated` is False).
    """

    def __init__(self, dim: int, heads: int, num_buckets: int, max_distance: int, owns_table: bool,
                 gated: bool) -> None:
        super().__init__(dim, heads)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads) if owns_table else None
        self.grep_linear = nn.Linear(dim // heads, _GATE_UNITS) if gated else None
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1)) if gated else None
        # A tuple keeps the other layer's module out of this one's state dict.
        self._table_owner: tuple["GatedRelativeAttention", ...] = (self,) if owns_table else ()
        self._buckets: torch.Tensor | None = None  # last [T, T] buckets, reused while T and device stay

    def share_table_of(self, owner: "GatedRelativeAttention") -> None:
        """Use `owner`'s bucket table (layer 0 of WavLM) for the position bias."""
        self._table_owner = (owner,)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """Raw bias [H, T, T] from the shared table."""
        if not self._table_owner or self._table_owner[0].relative_attention_bias is None:
            raise RuntimeError("GatedRelativeAttention has no bucket table (call share_table_of)")
        buckets = self._buckets
        if buckets is None or buckets.shape[0] != length or buckets.device != device:
            buckets = self._buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, device)
        return self._table_owner[0].relative_attention_bias(buckets).permute(2, 0, 1)

    def score_bias(self, x: torch.Tensor, x_heads: torch.Tensor) -> torch.Tensor:
        """Bucketed relative position bias, gated per head and frame from the un-projected input."""
        b, t, _ = x.shape
        bias = self.position_bias(t, x.device)[None]  # [1, H, T, T]
        if self.grep_linear is not None:
            # Gate from the un-projected input, per head: 8 outputs -> 2 x (sum of 4) -> sigmoid.
            gates = self.grep_linear(x_heads).view(b, self.heads, t, 2, _GATE_UNITS // 2).sum(-1)
            gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # [B, H, T, 1] each
            bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
        return bias


def build_wavlm(cfg: WavLMConfig) -> HubertModel:
    """An unfilled WavLM: a HubertModel whose attentions carry the (gated) relative position bias."""
    model = HubertModel(cfg)
    if cfg.relative_position_embedding:
        e, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        attns = [GatedRelativeAttention(e, heads, cfg.num_buckets, cfg.max_distance, i == 0, cfg.gru_rel_pos)
                 for i in range(cfg.encoder_layers)]
        for layer, attn in zip(model.encoder.layers, attns):
            attn.share_table_of(attns[0])
            layer.self_attn = attn
    return model


def _read_checkpoint(name: str) -> Any:
    """weights-only load; files that pickle config objects fall back to the restricted unpickler."""
    try:
        return safe_torch_load(name)
    except UnsafeCheckpointError:
        return load_fairseq_checkpoint(name)


def load_wavlm(path: PathLike) -> tuple[HubertModel, WavLMConfig]:
    """Build and fill a WavLM model from `{"cfg", "model"}` (CPU, float32, eval) and return its config.

    Raises:
        CheckpointError: not a WavLM checkpoint, or tensors that do not fit its cfg (keys listed).
        UnsafeCheckpointError: the pickle needs objects outside the allow-list (nothing executed).
    """
    name = os.fspath(path)
    ckpt = _read_checkpoint(name)
    cfg_dict = ckpt.get("cfg") if isinstance(ckpt, Mapping) else None
    state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
    fairseq = isinstance(cfg_dict, Mapping) and isinstance(cfg_dict.get("model"), Mapping)
    if fairseq or not (isinstance(cfg_dict, Mapping) and isinstance(state, Mapping)):
        found = ("a fairseq training checkpoint (cfg['model']: HuBERT/ContentVec?)" if fairseq
                 else f"a dict with keys {list(ckpt)[:4]}" if isinstance(ckpt, Mapping)
                 else f"a {type(ckpt).__name__}")
        raise CheckpointError(f"{name} is not a WavLM checkpoint (expected a dict with 'cfg' holding the WavLM "
                              f"config and 'model' holding the state dict; found {found})")
    cfg = WavLMConfig.from_dict(cfg_dict)
    try:
        model = build_wavlm(cfg)
    except ValueError as err:
        raise CheckpointError(f"{name}: unusable WavLM configuration ({err})") from None
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in state.items() if k not in _TRAINING_ONLY_KEYS}
    load_state_dict_strict(model, state, source=f"{name} (WavLM model as described by its cfg)")
    return model.eval(), cfg


class WavLMEncoder(SpeechEncoder):
    """`wavlmbase+`: all WavLM layers (post-LN: no final norm), `[1, 768, frames]` for Base+.

    Args:
        path: the checkpoint, e.g. `pretrain/WavLM-Base+.pt`.
        device: torch device; None = CUDA if available, else CPU.
        normalize: layer-norm the waveform first; None = the file's `cfg.normalize` (False for Base+).
        what: description used when the file is missing.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None, normalize: bool | None = None,
                 what: str = "WavLM checkpoint") -> None:
        super().__init__(device)
        model, cfg = load_wavlm(require_pretrain(path, what))
        self.model = model.to(self.device)
        self.normalize = cfg.normalize if normalize is None else normalize
        self.dim = cfg.encoder_embed_dim

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, floor((N - 400) / 320) + 1] float32 (N >= 400)."""
        x = self.to_mono(wav).to(self.device)
        if x.shape[0] < 400:
            raise ValueError(f"audio too short for wavlmbase+: {x.shape[0]} samples at 16 kHz, need >= 400")
        if self.normalize:  # zero mean, unit variance over the whole waveform (no affine, eps 1e-5)
            x = F.layer_norm(x, x.shape)
        return self.model(x[None]).transpose(1, 2)
