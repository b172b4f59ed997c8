"""Training and validation data of `train_diff.py`, read from the `preprocess_hubert_f0.py --use_diff` files.

An item: mel [L, M], f0 [L, 1] Hz, volume [L, 1], units [L, C], spk_id [1] long, aug_shift [1, 1] semitones,
name (path without `.wav`), name_ext (the list entry); L = duration / (hop / sr) frames from a random start
(training) or the whole clip (validation). Half of the training items use the key/volume-shifted copy.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.features import (MAX_FRAME_GAP, DatasetError, FeatureError, clip_problem, feature_path, read_feature,
                           read_filelist, speaker_of)
from core.schema import DiffusionConfig
from modules import f0 as f0_math

logger = logging.getLogger("diffusion")

__all__ = ["AudioDataset", "DIFFUSION_FEATURES", "DatasetError", "EpochShuffle", "get_data_loaders"]

# Feature kinds (core.features.FEATURE_SUFFIXES) `preprocess_hubert_f0.py --use_diff` writes per clip.
DIFFUSION_FEATURES = ("units", "f0", "volume", "aug_vol", "mel", "aug_mel")
PREP_HINT = "run python preprocess_hubert_f0.py --use_diff"
UNIT_PROBES = 4
LIST_PROBLEMS = 8


class AudioDataset(Dataset):
    """Clips of one file list with their diffusion features. waveform_sec: crop in seconds (`data.duration`);
    shorter clips (+ 0.1 s) are left out unless `whole_audio` (whole clips, for validation). spk: speaker map,
    used when n_spk > 1 (unknown speakers train as 0). load_all_data / device / fp16: the `train.cache_*`
    settings. use_aug: draw the shifted copy for half of the items. n_units, n_mels: expected unit width and
    mel bins (None: not checked). Raises DatasetError naming the unusable file and what to run."""

    def __init__(self, filelist: str, waveform_sec: float, hop_size: int, sample_rate: int,
                 spk: dict[str, int], n_spk: int = 1, load_all_data: bool = True, whole_audio: bool = False,
                 device: str | torch.device = "cpu", fp16: bool = False, use_aug: bool = False,
                 unit_interpolate_mode: str = "nearest", n_units: int | None = None,
                 n_mels: int | None = None) -> None:
        super().__init__()
        self.filelist = str(filelist)
        self.waveform_sec = float(waveform_sec)
        self.sample_rate = sample_rate
        self.frame_seconds = hop_size / sample_rate
        self.whole_audio = whole_audio
        self.use_aug = use_aug
        self.load_all_data = load_all_data
        self.device = torch.device(device)
        self.fp16 = fp16
        self.unit_interpolate_mode = unit_interpolate_mode
        self.n_units = n_units
        self.n_mels = n_mels
        what = "all the data" if load_all_data else "the f0, volume data"
        logger.info("Load %s filelists: %s", what, self.filelist)
        paths = [p.replace("\\", "/") for p in read_filelist(self.filelist)]
        seconds = {p: self._seconds(p) for p in paths}
        self.paths = paths if whole_audio else self._long_enough(paths, seconds)
        self._check_files(self.paths)
        self.spk_ids = self._speaker_ids(self.paths, spk, n_spk)
        if not load_all_data:  # check the unit width of a few files up front
            step = max(1, len(self.paths) // UNIT_PROBES)
            for path in self.paths[::step][:UNIT_PROBES]:
                self._units(path)
        self.buffers = [self._load(p, seconds[p], self.spk_ids[p]) for p in self.paths]

    def _seconds(self, path: str) -> float:
        if not os.path.isfile(path):
            raise DatasetError(f"{path} (listed in {self.filelist}) not found; re-run python "
                               "preprocess_flist_config.py if the dataset changed")
        problem, seconds = clip_problem(path, self.sample_rate)
        if problem:
            raise DatasetError(problem)
        return seconds

    def _long_enough(self, paths: list[str], seconds: dict[str, float]) -> list[str]:
        need = self.waveform_sec + 0.1
        kept = [p for p in paths if seconds[p] >= need]
        if not kept:
            longest = max(paths, key=lambda p: seconds[p])
            raise DatasetError(
                f"No training clip is longer than data.duration + 0.1 = {need:g} s (the longest, {longest}, "
                f"is {seconds[longest]:.2f} s); lower data.duration in diffusion.yaml")
        if len(kept) < len(paths):
            logger.warning(" [!] %d of %d clips in %s are shorter than data.duration + 0.1 = %g s and are "
                           "not used for training", len(paths) - len(kept), len(paths), self.filelist, need)
        return kept

    def _check_files(self, paths: list[str]) -> None:
        missing = [(p, [os.path.basename(feature_path(p, k)) for k in DIFFUSION_FEATURES
                        if not os.path.isfile(feature_path(p, k))]) for p in paths]
        lines = [f"{p}: missing {', '.join(files)}" for p, files in missing if files]
        if lines:
            more = f"\n... and {len(lines) - LIST_PROBLEMS} more" if len(lines) > LIST_PROBLEMS else ""
            raise DatasetError(f"{len(lines)} clips of {self.filelist} lack diffusion features:\n"
                               + "\n".join(lines[:LIST_PROBLEMS]) + more
                               + f"\nThe diffusion model trains on these files: {PREP_HINT}")

    def _speaker_ids(self, paths: list[str], spk: dict[str, int], n_spk: int) -> dict[str, int]:
        if n_spk <= 1:
            return {p: 0 for p in paths}
        names = {path: speaker_of(path) for path in paths}
        for name in names.values():
            if not 0 <= int(spk.get(name, 0)) < n_spk:
                raise DatasetError(f"spk[{name!r}] = {spk[name]} is outside 0..{n_spk - 1} (model.n_spk) in "
                                   "diffusion.yaml; fix the speaker map or model.n_spk")
        strangers = sorted(set(names.values()) - set(spk))
        if strangers:
            logger.warning(" [!] speakers %s of %s are not in spk of diffusion.yaml; they train as speaker 0",
                           ", ".join(strangers), self.filelist)
        return {path: int(spk.get(name, 0)) for path, name in names.items()}

    def _feature(self, path: str, kind: str, channels: int | None = None) -> Any:
        try:
            return read_feature(path, kind, channels=channels)
        except FeatureError as err:
            raise DatasetError(f"{err}; delete it and {PREP_HINT}") from None

    def _units(self, path: str) -> torch.Tensor:
        """Units of a clip -> [C, Tu] float32, width checked against `n_units`."""
        units = self._feature(path, "units")
        if self.n_units is not None and units.shape[0] != self.n_units:
            raise DatasetError(
                f"{feature_path(path, 'units')} has {units.shape[0]} channels but data.encoder_out_channels in "
                f"diffusion.yaml is {self.n_units}. Delete old features and {PREP_HINT} (made by another "
                "encoder?), or fix the config.")
        return units

    def _stretched_units(self, path: str, frames: int) -> torch.Tensor:
        """Units stretched to the F0 frame count: [frames, C]."""
        return f0_math.repeat_expand_2d(self._units(path), frames, self.unit_interpolate_mode).transpose(0, 1)

    def _mel(self, path: str, kind: str) -> np.ndarray:
        """The plain ("mel") or shifted ("aug_mel") mel of a clip: [T, n_mels] float32."""
        mel = self._feature(path, kind, self.n_mels)
        return mel[0] if kind == "aug_mel" else mel

    def _load(self, path: str, seconds: float, spk_id: int) -> dict[str, Any]:
        """Everything of one clip that stays in memory (all of it with `load_all_data`)."""
        f0_np, _uv = self._feature(path, "f0")
        volume, aug_vol = self._feature(path, "volume"), self._feature(path, "aug_vol")
        aug_mel, keyshift = self._feature(path, "aug_mel", self.n_mels)
        lengths = {"f0": len(f0_np), "volume": len(volume), "aug_vol": len(aug_vol), "aug_mel": len(aug_mel)}
        buf: dict[str, Any] = {"duration": seconds, "keyshift": keyshift}
        if self.load_all_data:
            mel = self._mel(path, "mel")
            lengths["mel"] = len(mel)
            units = self._stretched_units(path, len(f0_np))
            cache_dtype = torch.float16 if self.fp16 else torch.float32
            buf.update(mel=torch.from_numpy(mel).to(self.device, cache_dtype),
                       aug_mel=torch.from_numpy(aug_mel).to(self.device, cache_dtype),
                       units=units.to(self.device, cache_dtype))
        else:
            lengths["mel"] = int(np.load(feature_path(path, "mel"), mmap_mode="r").shape[0])
        frames = min(lengths.values())
        gaps = {k: v - lengths["f0"] for k, v in lengths.items() if abs(v - lengths["f0"]) >= MAX_FRAME_GAP}
        if gaps or frames == 0:
            detail = ", ".join(f"{os.path.basename(feature_path(path, k))} has {lengths[k]} frames"
                               for k in gaps) or "no frames"
            raise DatasetError(f"{path}: feature files disagree with its {lengths['f0']}-frame f0 ({detail}); "
                               f"delete its feature files and {PREP_HINT}")

        def column(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(x, dtype=np.float32)).unsqueeze(-1).to(self.device)

        buf.update(frames=frames, f0=column(f0_np), volume=column(volume), aug_vol=column(aug_vol),
                   spk_id=torch.LongTensor([spk_id]).to(self.device))
        return buf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_data(self.paths[index], self.buffers[index])

    def get_data(self, name_ext: str, buf: dict[str, Any]) -> dict[str, Any]:
        """One item (see the module docstring); uses Python's `random` like 4.1 (seeded per worker)."""
        if self.whole_audio:
            start, length = 0, int(buf["frames"])
        else:
            idx_from = random.uniform(0, buf["duration"] - self.waveform_sec - 0.1)
            start, length = int(idx_from / self.frame_seconds), int(self.waveform_sec / self.frame_seconds)
        aug = random.choice([True, False]) and self.use_aug
        end = start + length
        mel = buf.get("aug_mel" if aug else "mel")
        if mel is None:  # not cached; the shifted item needs the shifted mel (4.1 read the plain one here)
            mel = torch.from_numpy(self._mel(name_ext, "aug_mel" if aug else "mel"))
        mel = mel[start:end]
        shift = float(buf["keyshift"]) if aug else 0.0
        f0 = 2 ** (shift / 12) * buf["f0"][start:end]
        units = buf["units"] if "units" in buf else self._stretched_units(name_ext, int(buf["f0"].shape[0]))
        volume = buf["aug_vol" if aug else "volume"][start:end]
        return dict(mel=mel, f0=f0, volume=volume, units=units[start:end], spk_id=buf["spk_id"],
                    aug_shift=torch.tensor([[shift]], dtype=torch.float32),
                    name=os.path.splitext(name_ext)[0], name_ext=name_ext)


class EpochShuffle(Sampler[int]):
    """RandomSampler's order (one seed drawn from torch's RNG per epoch) that a resumed run can replay:
    `seed` is the running epoch's; set `resume_seed` and `skip` (items) before `iter()` to continue it."""

    def __init__(self, size: int) -> None:
        self.size, self.seed, self.resume_seed, self.skip = size, 0, None, 0

    def __iter__(self) -> Iterator[int]:
        if self.resume_seed is None:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            self.seed, self.resume_seed = self.resume_seed, None
        skip, self.skip = self.skip, 0
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()[skip:])

    def __len__(self) -> int:
        return self.size


def get_data_loaders(cfg: DiffusionConfig, num_workers: int | None = None,
                     n_mels: int | None = None) -> tuple[DataLoader, DataLoader | None]:
    """(training loader, validation loader or None when `data.validation_files` is unusable); num_workers
    overrides `train.num_workers` (0 when the cache lives on a GPU); n_mels: vocoder mel bins."""
    data, train = cfg.data, cfg.train
    cache_device = train.cache_device
    if cache_device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(" [!] train.cache_device is %s but CUDA is not available; caching on the CPU", cache_device)
        cache_device = "cpu"
    workers = 0 if cache_device != "cpu" else train.num_workers if num_workers is None else num_workers
    pin = cache_device == "cpu" and cfg.device.startswith("cuda") and torch.cuda.is_available()  # a CPU run: no CUDA
    common = dict(hop_size=data.block_size, sample_rate=data.sampling_rate, n_spk=cfg.model.n_spk,
                  spk={str(k): v for k, v in (cfg.spk or {}).items()}, load_all_data=train.cache_all_data,
                  unit_interpolate_mode=data.training_unit_mode, n_units=data.encoder_out_channels, n_mels=n_mels,
                  waveform_sec=data.duration, device=cache_device)
    train_set = AudioDataset(data.training_files, fp16=train.cache_fp16, use_aug=True, **common)
    loader_train = DataLoader(train_set, batch_size=train.batch_size, sampler=EpochShuffle(len(train_set)),
                              num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)
    try:
        read_filelist(data.validation_files)
    except DatasetError as err:
        logger.warning(" [!] no validation: %s", err)
        return loader_train, None
    valid_set = AudioDataset(data.validation_files, whole_audio=True, fp16=False, use_aug=False, **common)
    return loader_train, DataLoader(valid_set, batch_size=1, shuffle=False, num_workers=0, pin_memory=pin)
