"""Checkpoint ranking: each `G_<step>.pth` resynthesizes the validation clips from their own units, F0 and
speaker (as training's evaluation does, noise scale 0.35), and is scored against the original clips; the
checkpoint with the lowest mean MCD ranks first, one whose output is not finite (diverged) last, without
figures. `ResynthesisScorer` also serves train.py's --eval_metrics.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from core.checkpoint import checkpoint_steps
from core.config import load_config
from core.device import resolve_device
from core.schema import SovitsConfig, sovits_config
from evaluation.conversion import EvaluationError
from evaluation.metrics import audio_cepstra, mcd_db, pitch_errors
from evaluation.speaker import cosine, optional_speaker_encoder
from modules.F0Predictor import get_f0_predictor

__all__ = ["CHECKPOINT_KEYS", "RANK_BY", "Reference", "ResynthesisScorer", "checkpoint_files", "rank_checkpoints",
           "resynthesis_scorer"]

RANK_BY = "mcd_db"  # lower is better
# JSON keys of one checkpoint row (README documents each).
CHECKPOINT_KEYS = ("rank", "file", "step", "mcd_db", "lf0_rmse_cents", "speaker_similarity", "clips")
SCORE_KEYS = ("mcd_db", "lf0_rmse_cents", "speaker_similarity")


@dataclass
class Reference:
    """An original clip's F0 [T] (Hz) and voicing [T], mel-cepstra [T', 25] and speaker embedding (or None)."""

    f0: np.ndarray
    voiced: np.ndarray
    cepstra: np.ndarray
    embedding: np.ndarray | None


class ResynthesisScorer:
    """Scores a resynthesis against its original clip (mono float arrays at `rate`): mcd_db, lf0_rmse_cents
    (log-F0 RMSE in cents on frames voiced in both, F0 from `f0_predictor`) and speaker_similarity (cosine of
    the two speaker embeddings; None, with the reason in `skipped`, when the encoder is not installed)."""

    def __init__(self, rate: int, hop: int, f0_predictor: str = "fcpe", device: str | torch.device | None = None):
        self.rate = rate
        self.tracker = get_f0_predictor(f0_predictor, hop, rate, device)
        self.skipped: dict[str, str] = {}
        self.encoder = optional_speaker_encoder(device, self.skipped)
        self._seen: dict[bytes, Reference] = {}  # by content: training hands the same clips at every evaluation

    def reference(self, audio: np.ndarray) -> Reference:
        """What the scores need of an original clip (computed once per clip when several outputs meet it)."""
        f0, voiced = self.tracker.compute_f0_uv(audio)
        embedding = None if self.encoder is None else self.encoder.embed(audio, self.rate)
        return Reference(f0, voiced, audio_cepstra(audio, self.rate), embedding)

    def __call__(self, pairs: Iterable[tuple[Reference | np.ndarray, np.ndarray]]) -> dict[str, float | None]:
        """Mean of each figure over the (original clip or its Reference, output) pairs that have it (None when
        none has)."""
        scores = [self.score(ref if isinstance(ref, Reference) else self._known(ref), out) for ref, out in pairs]
        means = {}
        for key in SCORE_KEYS:
            values = [s[key] for s in scores if s[key] is not None]
            means[key] = float(np.mean(values)) if values else None
        return means

    def _known(self, audio: np.ndarray) -> Reference:
        """`reference(audio)`, computed once per distinct clip."""
        key = hashlib.sha1(np.ascontiguousarray(audio).tobytes()).digest()
        if key not in self._seen:
            self._seen[key] = self.reference(audio)
        return self._seen[key]

    def score(self, reference: Reference, output: np.ndarray) -> dict[str, float | None]:
        """The figures of one output; all None when it is not finite (a diverged checkpoint)."""
        if not np.isfinite(output).all():
            return dict.fromkeys(SCORE_KEYS)
        f0, voiced = self.tracker.compute_f0_uv(output)
        n = min(len(f0), len(reference.f0))
        pitch = pitch_errors(reference.f0[:n], reference.voiced[:n], f0[:n], voiced[:n])
        similarity = None if reference.embedding is None or self.encoder is None else \
            cosine(reference.embedding, self.encoder.embed(output, self.rate))
        return {"mcd_db": mcd_db(reference.cepstra, audio_cepstra(output, self.rate)),
                "lf0_rmse_cents": pitch["rmse_cents"], "speaker_similarity": similarity}


def resynthesis_scorer(cfg: SovitsConfig, device: torch.device) -> ResynthesisScorer:
    """The scorer for a config's audio (train.py --eval_metrics hands this to the trainer)."""
    return ResynthesisScorer(cfg.data.sampling_rate, cfg.data.hop_length, device=device)


def checkpoint_files(paths: list[str]) -> list[str]:
    """G files: folders expand to their `G_<step>.pth` files (by step), files are kept as given."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = [os.path.join(path, name) for _, name in checkpoint_steps(path, "G_*.pth")]
            if not found:
                raise EvaluationError(f"{path} holds no G_<step>.pth checkpoint (train with train.py first)")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise EvaluationError(f"checkpoint {path} not found")
    return files


def _step(path: str) -> int | None:
    name = os.path.basename(path)
    digits = name[2:-4] if name.startswith("G_") and name.endswith(".pth") else ""
    return int(digits) if digits.isdigit() else None


def _resyntheses(net: torch.nn.Module, items: list[tuple], references: list[Reference], device: torch.device,
                 progress: Callable[[int], None]) -> Iterator[tuple[Reference, np.ndarray]]:
    """(reference, resynthesis) of each training item (c, f0, spec, y, speaker, uv, volume); `progress(1)` once
    the consumer has taken the pair."""
    dtype = next(net.parameters()).dtype  # an fp16 file runs in fp16 on CUDA (load_generator)
    for (c, f0, _spec, _y, g, uv, volume), reference in zip(items, references):
        args = [x[None].to(device, dtype) for x in (c, f0, uv)]
        with torch.no_grad():
            y_hat, _ = net.infer(*args, g=g.to(device),
                                 vol=None if volume is None else volume[None].to(device, dtype))
        yield reference, y_hat[0, 0].float().cpu().numpy()
        progress(1)


def rank_checkpoints(models: list[str], config_path: str, val_list: str | None = None, f0_predictor: str = "fcpe",
                     device: str | None = None, progress: Callable[[int], None] = lambda _: None,
                     total: Callable[[int], None] = lambda _: None) -> dict[str, Any]:
    """Score every checkpoint on the validation clips and rank them (JSON document of evaluate.py -m).
    `total(n)` is told the number of resyntheses, `progress(1)` after each."""
    from data_utils import TextAudioSpeakerLoader
    from generator import load_generator

    files = checkpoint_files(models)
    hps = load_config(config_path)
    cfg = sovits_config(hps, config_path, for_training=True)
    val_list = val_list or cfg.data.validation_files
    clips = TextAudioSpeakerLoader(val_list, cfg, vol_aug=False)
    items = [item for path in clips.audiopaths if (item := clips.get_audio(path)) is not None]
    if not items:
        raise EvaluationError(f"no usable validation clip in {val_list} (run preprocess_hubert_f0.py first)")
    torch_device = resolve_device(device)
    scorer = ResynthesisScorer(cfg.data.sampling_rate, cfg.data.hop_length, f0_predictor, torch_device)
    references = [scorer.reference(item[3][0].numpy()) for item in items]
    total(len(files) * len(items))
    rows = []
    for path in files:
        net = load_generator(path, hps, config_path, torch_device).net
        figures = scorer(_resyntheses(net, items, references, torch_device, progress))
        rows.append({"file": path, "step": _step(path), **figures, "clips": len(items)})
    ranked = sorted(rows, key=lambda r: (r[RANK_BY] is None, r[RANK_BY] or 0.0))
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    return {"kind": "checkpoints", "config": config_path, "val": val_list, "f0_predictor": f0_predictor,
            "rank_by": RANK_BY, "skipped": dict(scorer.skipped), "best": ranked[0]["file"],
            "checkpoints": [{key: row[key] for key in CHECKPOINT_KEYS} for row in ranked]}
