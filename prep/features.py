"""Tutorial step 3 (`preprocess_hubert_f0.py`): per-clip training features next to every `X.wav`.

Units [1, C, Tu], (f0, uv), spectrogram [1025, T]; volume with `vol_embedding` or `--use_diff`; mel and the
augmented mel and volume with `--use_diff`. Files are written atomically and kept while up to date.
"""
from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from core.atomic import DiskFullError, remove_stale_temps, write_atomic
from core.config import HParams
from core.device import resolve_device
from core.features import feature_path, feature_problem, list_speakers, save_f0, save_npy, save_object_npy
from core.runtime import plain
from modules.audio_io import AudioReadError, read_audio_mono, resample_audio
from modules.mel_processing import spectrogram_torch, volume_extract

logger = logging.getLogger(__name__)

ENCODER_RATE = 16000
# F0 predictors that may run on two clips at once in one process (pm calls Praat, which keeps global state).
LANE_SAFE_F0 = ("dio", "harvest", "crepe", "rmvpe", "fcpe")


@dataclass
class FeatureSettings:
    """Everything a worker needs, picklable so it can cross process boundaries."""

    sampling_rate: int
    hop_length: int
    filter_length: int
    win_length: int
    speech_encoder: str
    vol_embedding: bool
    f0_predictor: str
    use_diff: bool = False
    vocoder_ckpt: str = "pretrain/nsf_hifigan/model"
    device: str | None = None
    pretrain_dir: str = "pretrain"
    overwrite: bool = False


@dataclass
class FeatureSummary:
    """Clip counts of a run: computed, already complete, and (path, reason) of the failed ones."""

    done: int = 0
    up_to_date: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def settings_from_config(hps: HParams, f0_predictor: str, use_diff: bool, device: str | None,
                         diffusion: HParams | None = None, overwrite: bool = False) -> FeatureSettings:
    """Worker settings from the So-VITS config `hps` (and, with `use_diff`, the diffusion config's vocoder)."""
    data, model = hps.data, hps.model
    vocoder = str(diffusion.vocoder.ckpt) if use_diff and diffusion is not None else "pretrain/nsf_hifigan/model"
    return FeatureSettings(int(data.sampling_rate), int(data.hop_length), int(data.filter_length),
                           int(data.win_length), model.get("speech_encoder") or "vec768l12",
                           bool(model.get("vol_embedding", False)), f0_predictor, use_diff, vocoder, device,
                           overwrite=overwrite)


class FeatureExtractor:
    """Loads the encoder, F0 predictor (and vocoder mel) once; ``process(clip)`` writes one clip's files."""

    def __init__(self, settings: FeatureSettings) -> None:
        from modules.F0Predictor import get_f0_predictor
        from vencoder import get_speech_encoder

        self.s = settings
        self.device = str(resolve_device(settings.device))
        self.encoder = get_speech_encoder(settings.speech_encoder, device=self.device,
                                          pretrain_dir=settings.pretrain_dir)
        self.dim = int(self.encoder.dim)
        self.f0 = get_f0_predictor(settings.f0_predictor, hop_length=settings.hop_length,
                                   sampling_rate=settings.sampling_rate, device=self.device, threshold=0.05)
        self.vocoder = None
        if settings.use_diff:
            from vdecoder.nsf_hifigan.models import NsfHifiGAN

            self.vocoder = NsfHifiGAN(settings.vocoder_ckpt, device=self.device)

    def _outdated(self, clip: Path) -> dict[str, bool]:
        """Which files of `clip` to (re)compute: all with `overwrite`, else the ones feature_problem rejects."""
        s = self.s
        info = sf.info(str(clip))
        samples = info.frames * s.sampling_rate // info.samplerate
        kinds = ["units", "f0", "spec"] + (["volume"] if s.vol_embedding or s.use_diff else [])
        kinds += ["mel", "aug_mel", "aug_vol"] if s.use_diff else []
        bins = {"units": self.dim, "spec": s.filter_length // 2 + 1,
                "mel": self.vocoder and self.vocoder.dimension, "aug_mel": self.vocoder and self.vocoder.dimension}
        todo = {}
        for kind in kinds:
            problem = "" if s.overwrite else feature_problem(clip, kind, samples, s.hop_length, s.sampling_rate,
                                                             bins.get(kind))
            if problem not in ("", "missing"):
                logger.warning("%s; recomputing", problem)
            todo[kind] = s.overwrite or bool(problem)
        # Both files of the augmented copy come from one random draw.
        todo["aug"] = todo.pop("aug_mel", False) | todo.pop("aug_vol", False)
        return todo

    def process(self, clip: Path) -> bool:
        """Write the missing, stale or damaged feature files of one clip; returns True when any was computed."""
        s = self.s
        todo = self._outdated(clip)
        if not any(todo.values()):
            return False
        wav, sr = read_audio_mono(clip)
        if sr != s.sampling_rate:
            wav = resample_audio(wav, sr, s.sampling_rate)
        audio = torch.from_numpy(wav).unsqueeze(0)  # [1, L]
        if todo["units"]:
            wav16 = torch.from_numpy(resample_audio(wav, s.sampling_rate, ENCODER_RATE)).to(self.device)
            with torch.inference_mode():
                units = self.encoder.encoder(wav16).float().cpu()
            if not torch.isfinite(units).all():
                raise ValueError(f"speech encoder {s.speech_encoder} gave NaN/inf units; its checkpoint in "
                                 f"{s.pretrain_dir}/ looks broken")
            write_atomic(feature_path(clip, "units"), lambda f: torch.save(units, f))
        if todo["f0"]:
            f0, uv = self.f0.compute_f0_uv(wav)
            save_f0(feature_path(clip, "f0"), f0, uv)
        if todo["spec"]:
            spec = spectrogram_torch(audio, s.filter_length, s.sampling_rate, s.hop_length, s.win_length)[0]
            write_atomic(feature_path(clip, "spec"), lambda f: torch.save(spec, f))
        if todo.get("volume"):
            save_npy(feature_path(clip, "volume"), volume_extract(audio, s.hop_length).numpy().astype(np.float32))
        if todo.get("mel") or todo["aug"]:
            self._diffusion_files(audio, clip, todo)
        return True

    def _diffusion_files(self, audio: torch.Tensor, clip: Path, todo: dict[str, bool]) -> None:
        assert self.vocoder is not None
        with torch.inference_mode():
            if todo.get("mel"):
                mel = self.vocoder.extract(audio.to(self.device))[0].float().cpu().numpy()
                save_npy(feature_path(clip, "mel"), mel)
            if todo["aug"]:
                # Volume and key augmentation as 4.1 draws it, deliberately unseeded.
                peak = float(audio.abs().max()) + 1e-5
                vol_shift = random.uniform(-1, min(1.0, float(np.log10(1 / peak))))
                keyshift = random.uniform(-5, 5)
                shifted = audio * 10 ** vol_shift
                aug_mel = self.vocoder.extract(shifted.to(self.device), keyshift=keyshift)
                save_object_npy(feature_path(clip, "aug_mel"), [aug_mel[0].float().cpu().numpy(), keyshift])
                aug_vol = volume_extract(shifted, self.s.hop_length).numpy().astype(np.float32)
                save_npy(feature_path(clip, "aug_vol"), aug_vol)


_extractor: FeatureExtractor | None = None  # a worker process's models, built once by _start_worker


def _start_worker(settings: FeatureSettings, threads: int, ranks) -> None:
    """Pool initializer: share the cores among the workers, then load the models once for all the clips."""
    global _extractor
    with ranks.get_lock():
        rank = ranks.value
        ranks.value += 1
    if settings.device is None and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        settings.device = f"cuda:{rank % torch.cuda.device_count()}"
    torch.set_num_threads(threads)
    _extractor = FeatureExtractor(settings)


def _process(extractor: FeatureExtractor, clip: str) -> tuple[bool, str | None]:
    """(files computed?, error) for one clip; a full disk stops the run."""
    try:
        return extractor.process(Path(clip)), None
    except DiskFullError:
        raise
    except (AudioReadError, ValueError, RuntimeError, OSError) as err:
        logger.error("%s: %s; skipped", clip, err)
        return False, str(err)


def _process_in_worker(clip: str) -> tuple[bool, str | None]:
    assert _extractor is not None
    return _process(_extractor, clip)


def _lanes(extractor: FeatureExtractor) -> int:
    """How many clips one process works on at once: two on a CPU with two or more torch threads, each clip
    on half of them. The encoders' and F0 networks' small-batch work scales poorly over threads, so two
    clips keep the cores busier than one (1.08-1.12x on 2 cores) with one copy of the models."""
    lane_safe = extractor.s.f0_predictor in LANE_SAFE_F0 and not plain()
    return 2 if extractor.device == "cpu" and torch.get_num_threads() >= 2 and lane_safe else 1


def _process_all(extractor: FeatureExtractor, clips: list[str], bar) -> list[tuple[bool, str | None]]:
    """Every clip through `extractor` in this process, on `_lanes` threads."""
    lanes = _lanes(extractor)
    if lanes == 1:
        return [_process(extractor, clip) for clip in bar(clips)]
    getattr(extractor.f0, "net", None)  # a network built on first use (CREPE) is built once, before the lanes
    threads = torch.get_num_threads()
    torch.set_num_threads(threads // lanes)  # read by each new thread at its first parallel operation
    try:
        with ThreadPoolExecutor(lanes, thread_name_prefix="features") as pool:
            return list(bar(pool.map(partial(_process, extractor), clips)))
    finally:
        torch.set_num_threads(threads)


def extract_features(settings: FeatureSettings, in_dir: str | os.PathLike = "dataset/44k",
                     num_processes: int = 1, progress: bool = True) -> FeatureSummary:
    """Process every clip under ``in_dir`` with ``num_processes`` workers (0 = one per CPU). Each worker loads
    the models once and takes the next clip when it is done with one (long and short clips even out); the
    CPU threads are shared among the workers."""
    from tqdm import tqdm

    root = Path(in_dir)  # <in_dir>/<speaker>/*.wav, hidden folders and files left out
    clips = [str(p) for spk in (list_speakers(root) if root.is_dir() else [])
             for p in sorted((root / spk).glob("*.wav")) if not p.name.startswith(".")]
    if not clips:
        raise FileNotFoundError(f"no .wav clips found under {in_dir}/<speaker>/ (run resample.py first)")
    if num_processes == 0:
        num_processes = os.cpu_count() or 1
    num_processes = max(1, min(num_processes, len(clips)))
    for folder in {os.path.dirname(clip) for clip in clips}:
        remove_stale_temps(folder)  # left by a run that was killed mid-write
    random.shuffle(clips)  # as 4.1 does
    bar = partial(tqdm, total=len(clips), desc="features", disable=not progress)
    if num_processes == 1:
        results = _process_all(FeatureExtractor(settings), clips, bar)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        threads = max(1, torch.get_num_threads() // num_processes)
        if torch.get_num_threads() <= num_processes and str(resolve_device(settings.device)) == "cpu":
            logger.info("%d workers share %d torch thread(s): one worker already keeps the cores busy, so more "
                        "workers gain little on this machine (each also loads its own models)",
                        num_processes, torch.get_num_threads())
        with ProcessPoolExecutor(num_processes, mp_context=context, initializer=_start_worker,
                                 initargs=(settings, threads, context.Value("i", 0))) as pool:
            results = list(bar(pool.map(_process_in_worker, clips)))
    return FeatureSummary(sum(done for done, error in results if error is None),
                          sum(not done for done, error in results if error is None),
                          [(clip, error) for clip, (_, error) in zip(clips, results) if error is not None])
