"""Training data: `TextAudioSpeakerLoader` (one clip per item) and `TextAudioCollate`.

Each list line names a 44.1 kHz mono 16-bit `X.wav` with its features beside it. An item is
`(c [C, T], f0 [T], spec [1025, T], audio [1, T*hop], speaker id [1], uv [T], volume [T] | None)`.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.utils.data
from torch.nn.utils.rnn import pad_sequence

from core.atomic import write_atomic
from core.config import HParams
from core.features import (DatasetError, FeatureError, clip_problem, feature_path, read_feature, read_filelist,
                           spec_path, speaker_of)
from core.schema import SovitsConfig, sovits_config
from modules import f0 as f0_math
from modules.mel_processing import spectrogram_torch

logger = logging.getLogger(__name__)

__all__ = ["Item", "TextAudioCollate", "TextAudioSpeakerLoader"]

# (c, f0, spec, audio, speaker id, uv, volume) as 4.1 returns it.
Item = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
             Optional[torch.Tensor]]

# 4.1's hard-coded crop: clips over 800 frames train on a random 790-frame window.
CROP_ABOVE = 800
CROP_TO = 790
# How many unit files are opened up front to compare their width with model.ssl_dim.
UNIT_PROBES = 4
LIST_PROBLEMS = 20
# Clips longer than this are worth a warning: loading them costs memory although only 790 frames train.
LONG_CLIP_SECONDS = 20


class TextAudioSpeakerLoader(torch.utils.data.Dataset):
    """Clips of a file list with their features, shuffled once like 4.1 (seed 1234, same order every epoch).

    hparams: the So-VITS config (HParams or SovitsConfig). all_in_mem: load every clip up front into RAM. vol_aug:
    allow volume augmentation (train set); it also needs `train.vol_aug` and volumes. Lists that cannot train
    (unknown speaker, wrong unit width or WAV format, no usable clip) raise DatasetError; a clip with a missing,
    unreadable or inconsistent feature file is reported by file name and skipped.
    """

    def __init__(self, audiopaths: str | os.PathLike, hparams: HParams | SovitsConfig, all_in_mem: bool = False,
                 vol_aug: bool = True) -> None:
        cfg = hparams if isinstance(hparams, SovitsConfig) else sovits_config(hparams, for_training=True)
        data = cfg.data
        self.list_path = os.fspath(audiopaths)
        self.max_wav_value = data.max_wav_value
        self.sampling_rate, self.hop_length = data.sampling_rate, data.hop_length
        self.filter_length, self.win_length = data.filter_length, data.win_length
        self.unit_interpolate_mode = data.training_unit_mode
        self.spk_map: dict[str, int] = dict(cfg.spk)
        self.ssl_dim = cfg.model.ssl_dim
        self.speech_encoder = cfg.model.speech_encoder or "vec768l12"
        self.vol_emb = cfg.model.vol_embedding
        self.vol_aug = cfg.train.vol_aug and vol_aug
        paths = [p.replace("\\", "/") for p in read_filelist(self.list_path)]
        # Same permutation as 4.1's random.seed(1234); random.shuffle(...), without touching the global RNG.
        random.Random(1234).shuffle(paths)
        self.audiopaths = self._usable(paths)
        self.all_in_mem = all_in_mem
        self.cache: list[Item | None] = [self.get_audio(p) for p in self.audiopaths] if all_in_mem else []

    # -- checks when the dataset is built ------------------------------------------------------
    def _usable(self, paths: list[str]) -> list[str]:
        """Stop on config/list mismatches, drop (and report) clips with missing files."""
        strangers: dict[str, list[str]] = {}
        not_pcm: list[str] = []
        long_clips: list[str] = []
        skipped: list[tuple[str, str]] = []
        usable: list[str] = []
        for path in paths:
            speaker = speaker_of(path)
            if speaker not in self.spk_map:
                strangers.setdefault(speaker, []).append(path)
                continue
            if not os.path.isfile(path):
                skipped.append((path, "the clip itself is missing"))
                continue
            problem, seconds = clip_problem(path, self.sampling_rate)
            if problem:
                not_pcm.append(problem)
                continue
            if seconds > LONG_CLIP_SECONDS:
                long_clips.append(path)
            kinds = ("units", "f0", "volume") if self.vol_emb else ("units", "f0")
            missing = [feature_path(path, k) for k in kinds if not os.path.isfile(feature_path(path, k))]
            if missing:
                skipped.append((path, f"missing {', '.join(missing)} (run python preprocess_hubert_f0.py)"))
                continue
            usable.append(path)
        if strangers:
            known = ", ".join(self.spk_map) or "none"
            lines = [f"Speaker '{s}' ({len(p)} clips, e.g. {p[0]}) is not in the config's spk (available: {known})"
                     for s, p in strangers.items()]
            raise DatasetError("\n".join(lines) + f"\n{self.list_path} and the config come from different "
                               "runs; re-run python preprocess_flist_config.py or fix spk in config.json.")
        if not_pcm:
            more = f"\n... and {len(not_pcm) - LIST_PROBLEMS} more" if len(not_pcm) > LIST_PROBLEMS else ""
            raise DatasetError("\n".join(not_pcm[:LIST_PROBLEMS]) + more)
        for path, why in skipped[:LIST_PROBLEMS]:
            logger.warning("skipping %s: %s", path, why)
        if len(skipped) > LIST_PROBLEMS:
            logger.warning("... %d more clips of %s skipped", len(skipped) - LIST_PROBLEMS, self.list_path)
        if long_clips:
            logger.warning("%d clips of %s are longer than %d s (e.g. %s): training uses a random %d-frame "
                           "window of each, but loading them costs memory and time; consider splitting them",
                           len(long_clips), self.list_path, LONG_CLIP_SECONDS, long_clips[0], CROP_TO)
        if not usable:
            raise DatasetError(f"none of the {len(paths)} clips in {self.list_path} can be used "
                               f"(first problem: {skipped[0][0]}: {skipped[0][1]})")
        self._check_unit_width(usable)
        return usable

    def _check_unit_width(self, usable: list[str]) -> None:
        """Units from another encoder make every step fail later; test a few files now."""
        step = max(1, len(usable) // UNIT_PROBES)
        for path in usable[::step][:UNIT_PROBES]:
            try:
                width = read_feature(path, "units").shape[0]
            except FeatureError:
                continue  # reported by name when the clip is loaded
            if width != self.ssl_dim:
                raise DatasetError(self._width_message(path, width))

    def _width_message(self, path: str, width: int) -> str:
        from vencoder import encoders_of_width  # only the name table; no encoder is loaded

        fits = encoders_of_width(width, onnx=False)
        hint = f" (made by e.g. {', '.join(fits)})" if fits else ""
        return (f"{path}.soft.pt has {width} channels{hint} but the config expects {self.ssl_dim} "
                f"(model.ssl_dim, speech_encoder {self.speech_encoder}). Delete old features or re-run "
                "python preprocess_hubert_f0.py --overwrite, or fix speech_encoder/ssl_dim in the config.")

    # -- loading one clip ------------------------------------------------------------------------
    def _spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """[1, L] -> [n_fft // 2 + 1, L // hop]."""
        return spectrogram_torch(audio, self.filter_length, self.sampling_rate, self.hop_length,
                                 self.win_length)[0]

    def _load_spec(self, path: str, audio: torch.Tensor, clip: tuple[int, int, int]) -> torch.Tensor:
        """The saved spectrogram, or a new one (saved) when it is missing or does not fit the clip."""
        try:
            return read_feature(path, "spec", *clip, self.filter_length // 2 + 1)
        except FeatureError as err:
            if os.path.isfile(spec_path(path)):
                logger.warning("%s; recomputing it", err)
        spec = self._spectrogram(audio)
        write_atomic(spec_path(path), lambda f: torch.save(spec, f))
        return spec

    def _read(self, path: str) -> Item:
        """Read one clip and its features, each checked against the clip (FeatureError naming the file)."""
        pcm, rate = sf.read(path, dtype="int16", always_2d=True)
        if rate != self.sampling_rate:
            raise ValueError(f"sample rate {rate} Hz, expected {self.sampling_rate}")
        audio = torch.from_numpy(pcm[:, 0].astype(np.float32) / self.max_wav_value).unsqueeze(0)
        clip = (audio.shape[1], self.hop_length, self.sampling_rate)
        spec = self._load_spec(path, audio, clip)
        f0_np, uv_np = read_feature(path, "f0", *clip)
        units = read_feature(path, "units", *clip)
        if units.shape[0] != self.ssl_dim:
            raise ValueError(self._width_message(path, units.shape[0]))
        c = f0_math.repeat_expand_2d(units, len(f0_np), mode=self.unit_interpolate_mode)
        volume = torch.from_numpy(read_feature(path, "volume", *clip)) if self.vol_emb else None
        lmin = min(c.shape[-1], spec.shape[-1], *([] if volume is None else [len(volume)]))
        if lmin == 0:
            raise ValueError("shorter than one frame")
        speaker = torch.LongTensor([self.spk_map[speaker_of(path)]])
        f0, uv = torch.FloatTensor(f0_np[:lmin]), torch.FloatTensor(uv_np[:lmin])
        volume = None if volume is None else volume[:lmin]
        return c[:, :lmin], f0, spec[:, :lmin], audio[:, :lmin * self.hop_length], speaker, uv, volume

    def get_audio(self, filename: str) -> Item | None:
        """Load one clip; None (with a warning naming the file) when its files are unusable."""
        try:
            return self._read(filename)
        except FeatureError as err:
            logger.warning("skipping %s: %s; run python preprocess_hubert_f0.py to recompute it", filename, err)
        except (ValueError, OSError, sf.LibsndfileError) as err:
            logger.warning("skipping %s: %s", filename, err)
        return None

    def random_slice(self, c: torch.Tensor, f0: torch.Tensor, spec: torch.Tensor, audio_norm: torch.Tensor,
                     spk: torch.Tensor, uv: torch.Tensor, volume: torch.Tensor | None) -> Item:
        """Volume augmentation and the 790-frame crop; uses Python's global RNG, which torch seeds per
        DataLoader worker."""
        # 4.1 draws the coin first, whether or not augmentation is on; kept for the same random stream.
        if random.choice([True, False]) and self.vol_aug and volume is not None:
            max_amp = float(torch.max(torch.abs(audio_norm))) + 1e-5
            max_shift = min(1.0, float(np.log10(1 / max_amp)))
            scale = 10 ** random.uniform(-1, max_shift)
            audio_norm = audio_norm * scale
            volume = volume * scale
            spec = self._spectrogram(audio_norm)
        if spec.shape[1] > CROP_ABOVE:
            start = random.randint(0, spec.shape[1] - CROP_ABOVE)
            end = start + CROP_TO
            spec, c, f0, uv = spec[:, start:end], c[:, start:end], f0[start:end], uv[start:end]
            audio_norm = audio_norm[:, start * self.hop_length:end * self.hop_length]
            if volume is not None:
                volume = volume[start:end]
        return c, f0, spec, audio_norm, spk, uv, volume

    def __getitem__(self, index: int) -> Item | None:
        item = self.cache[index] if self.all_in_mem else self.get_audio(self.audiopaths[index])
        return None if item is None else self.random_slice(*item)

    def __len__(self) -> int:
        return len(self.audiopaths)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
              torch.Tensor, Optional[torch.Tensor]]


class TextAudioCollate:
    """Zero-padded batch sorted by frame count, longest first: `(c [B, C, T], f0 [B, T], spec [B, F, T],
    audio [B, 1, L], speaker ids [B, 1], lengths [B], uv [B, T], volume [B, T] or None)`; volume is None when
    any item lacks it. Items that failed to load (None) are dropped; an all-None batch gives None.
    """

    def __call__(self, batch: Sequence[Item | None]) -> Batch | None:
        items = [b for b in batch if b is not None]
        if not items:
            return None
        lengths, order = torch.sort(torch.LongTensor([x[0].shape[1] for x in items]), dim=0, descending=True)
        items = [items[j] for j in order.tolist()]

        def pad(k: int) -> torch.Tensor:
            """Field `k` of every item as float32, zero-padded along its last (time) axis."""
            rows = [x[k].transpose(0, -1) for x in items]
            return pad_sequence(rows, batch_first=True).transpose(1, -1).float().contiguous()

        volume = pad(6) if all(x[6] is not None for x in items) else None
        speakers = torch.stack([x[4].reshape(-1)[:1] for x in items]).long()
        return pad(0), pad(1), pad(2), pad(3), speakers, lengths, pad(5), volume
