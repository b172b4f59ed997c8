"""`Svc`: a loaded So-VITS model that converts single pieces (`infer`) and whole songs, streamed.

    svc = Svc("logs/44k/G_30400.pth", "configs/config.json")
    svc.convert_file("raw/song.wav", "results/out.flac", "nyaru", InferOptions(tran=0))
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO, Callable, ContextManager, Iterator, Mapping

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from cluster import UnitMixer, load_cluster_or_index
from core.atomic import DiskFullError, is_disk_full
from core.config import load_config
from core.device import device_problem, resolve_device
from core.runtime import bf16_problem, release_memory, tune_allocator
from core.train_support import autocast
from generator import (LoadedGenerator, ModelConfigMismatch, check_encoder_width, infer_speech_encoder,
                       load_generator)
from inference.command import default_cluster_path
from inference.enhancer import Enhancer
from inference.options import (MIN_CLIP_FRAMES, SEED, F0FilterException, InferOptions, SvcError, fill_a_to_b,
                               pad_array, seeded)
from inference.shallow import load_diffusion
from inference.slice_loop import iter_song, read_wav
from modules.slicer import Audio, FileSource, rms_frames
from inference.speaker_mix import validate_spk_mix_map
from modules import f0 as f0_math
from modules.audio_resample import resample
from modules.F0Predictor import get_f0_predictor
from modules.mel_processing import volume_extract
from vencoder import WHISPER_MAX_SECONDS, get_speech_encoder

__all__ = ["F0FilterException", "InferOptions", "SEED", "StageHook", "Svc", "SvcError", "change_rms",
           "fill_a_to_b", "format_wav", "pad_array"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
StageHook = Callable[[str], ContextManager[object]]
_COPY_BLOCK = 1 << 20  # samples per block when converting inputs to WAV
_OPTION_NAMES = frozenset(f.name for f in fields(InferOptions))


def format_wav(audio_path: PathLike) -> str:
    """Decode a non-.wav input into a 16-bit mono `<stem>.wav` next to it (as 4.1); returns the WAV's path."""
    path = Path(audio_path)
    if path.suffix == ".wav":
        return str(path)
    target = path.with_suffix(".wav")
    with FileSource(path) as src, sf.SoundFile(target, "w", src.sample_rate, 1, format="WAV",
                                               subtype="PCM_16") as out:
        for start in range(0, src.n_samples, _COPY_BLOCK):
            out.write(src.read(start, min(start + _COPY_BLOCK, src.n_samples)))
    return str(target)


def change_rms(data1: np.ndarray, sr1: int, data2: torch.Tensor, sr2: int, rate: float) -> torch.Tensor:
    """`data2` [N2] with the loudness envelope of `data1` [N1] imposed: rate 1 keeps data2's, 0 takes data1's.
    Envelopes: RMS of 1 s frames, hop 0.5 s, stretched to N2."""
    env1, env2 = (F.interpolate(torch.from_numpy(rms_frames(x, sr // 2 * 2, sr // 2))[None, None].to(data2.device),
                                size=data2.shape[0], mode="linear")[0, 0]
                  for x, sr in ((data1, sr1), (data2.detach().float().cpu().numpy(), sr2)))
    env2 = torch.clamp(env2, min=1e-6)
    return data2 * (torch.pow(env1, torch.tensor(1 - rate)) * torch.pow(env2, torch.tensor(rate - 1)))


def _options(arguments: dict[str, object]) -> InferOptions:
    """The options among a 4.1 method's arguments (`locals()`), which carry the field names."""
    return InferOptions(**{k: v for k, v in arguments.items() if k in _OPTION_NAMES})


class Svc:
    """A So-VITS model ready for conversion (4.1's constructor arguments; device None = auto).

    net_g_path / config_path are not read with only_diffusion (-od). cluster_model_path: k-means `.pt` or
    retrieval `.pkl`, loaded if it exists; `unit_mixer` replaces it. nsf_hifigan_enhance reads
    `<pretrain_dir>/nsf_hifigan/model` (not with -shd). Without the diffusion file, -shd / -od run So-VITS
    alone (`output_mode` says what runs).
    onnx: run the generator with ONNX Runtime (CPU, fp32; exported once, cached beside net_g_path). bf16: the
    generator under bf16 autocast, refused where the device has no native bf16.
    `with svc.stage_hook(name):` (default no-op) wraps each stage, never nested: "slicing", "reading", "piece
    preparation", "loading" (F0 predictor), "F0", "encoder", "cluster", "synthesizer", "diffusion", "enhancer",
    "writing". Raises ConfigError, CheckpointError (ModelConfigMismatch), FileNotFoundError, VocoderLoadError,
    SvcError (missing diffusion config, shallow-only model with -od).
    """

    def __init__(self, net_g_path: PathLike, config_path: PathLike, device: str | torch.device | None = None,
                 cluster_model_path: PathLike = "logs/44k/kmeans_10000.pt", nsf_hifigan_enhance: bool = False,
                 diffusion_model_path: PathLike = "logs/44k/diffusion/model_0.pt",
                 diffusion_config_path: PathLike = "configs/diffusion.yaml", shallow_diffusion: bool = False,
                 only_diffusion: bool = False, spk_mix_enable: bool = False, feature_retrieval: bool = False,
                 pretrain_dir: PathLike = "pretrain", unit_mixer: UnitMixer | None = None, onnx: bool = False,
                 bf16: bool = False) -> None:
        self.stage_hook: StageHook = contextlib.nullcontext
        self.spk_mix_enable = self._onnx = False  # read by load_model
        tune_allocator()
        if problem := device_problem(device):  # a name torch does not know, or a GPU this process lacks
            raise SvcError(f"{problem}; choose another with -d (cpu, cuda:0, ...)")
        self.dev = resolve_device(device)
        self.net_g_path, self.config_path = os.fspath(net_g_path), os.fspath(config_path)
        self.diffusion = load_diffusion(diffusion_model_path, diffusion_config_path, self.dev) \
            if shallow_diffusion or only_diffusion else None
        self.only_diffusion = bool(only_diffusion) and self.diffusion is not None
        self.shallow_diffusion = bool(shallow_diffusion) and self.diffusion is not None and not self.only_diffusion
        side = self.diffusion
        if self.only_diffusion:  # rate, hop, speakers, encoder and unit mode come from the diffusion config (4.1)
            side.check_k_step(0, shallow=False)
            self.hps_ms = self.net_g_ms = None
            self.dtype = torch.float32
            self.target_sample, self.hop_size = side.sample_rate, side.hop_size
            self.unit_interpolate_mode = side.unit_interpolate_mode
            self.spk2id: dict[str, int] = dict(side.spk2id)
            self.spk_map_path = side.config_path
            self.vol_embedding = False  # the diffusion side measures the loudness of the input itself
            self.has_f0_decoder = False
            self.speech_encoder = side.encoder
            units_width = side.units_width
        else:
            self.hps_ms = load_config(self.config_path, missing_as_none=True)
            loaded = self.load_model()
            cfg = loaded.config
            self.target_sample, self.hop_size = cfg.data.sampling_rate, cfg.data.hop_length
            self.unit_interpolate_mode = cfg.data.inference_unit_mode
            self.spk2id = dict(cfg.spk)
            self.spk_map_path = self.config_path
            self.vol_embedding = cfg.model.vol_embedding
            self.has_f0_decoder = loaded.has_f0_decoder and cfg.model.use_automatic_f0_prediction
            if not loaded.has_f0_decoder and cfg.model.use_automatic_f0_prediction:
                logger.warning("%s has no F0-predictor weights (4.0-era model?): -a/--auto_predict_f0 is "
                               "unavailable", self.net_g_path)
            units_width = cfg.model.ssl_dim
            self.speech_encoder = infer_speech_encoder(cfg.model.speech_encoder, units_width, self.config_path)
        self.bf16 = bool(bf16) and self.net_g_ms is not None
        if self.bf16 and (problem := bf16_problem(self.dev)):
            if self.dev.type != "cuda":  # a CPU's reference bf16 kernels run many times slower than fp32
                raise SvcError(f"--bf16 refused: {problem}")
            logger.warning("--bf16: %s; it runs, but without --bf16 it is likely faster", problem)
        if onnx and self.net_g_ms is not None:
            if self.dev.type != "cpu" or self.bf16:
                raise SvcError("the ONNX Runtime backend (--onnx) runs fp32 on the CPU: add -d cpu, drop --bf16")
            self._onnx = True
        self.synthesizer = self._synthesizer_for(self.net_g_ms)
        self.hubert_model = get_speech_encoder(self.speech_encoder, self.dev, pretrain_dir)
        dim = self.hubert_model.dim
        if not self.only_diffusion:
            check_encoder_width(self.speech_encoder, dim, units_width, self.spk_map_path)
        if self.diffusion_used and side.units_width != dim:  # shallow diffusion reuses the So-VITS units
            raise ModelConfigMismatch(
                f"diffusion model {side.model_path} takes {side.units_width}-dim units but " + (
                    f"data.encoder '{self.speech_encoder}' gives {dim}; set data.encoder in {side.config_path} "
                    "to the encoder it was trained with" if self.only_diffusion else
                    f"the So-VITS speech encoder '{self.speech_encoder}' gives {dim}; shallow diffusion needs a "
                    f"diffusion model trained with the same encoder (data.encoder in {side.config_path})"))
        if self.shallow_diffusion and (side.sample_rate, side.hop_size) != (self.target_sample, self.hop_size):
            raise ModelConfigMismatch(
                f"{side.config_path} has sampling_rate {side.sample_rate} / block_size {side.hop_size} but "
                f"{self.config_path} has {self.target_sample} / {self.hop_size}; they must agree")
        self.cluster_model_path = os.fspath(cluster_model_path) if cluster_model_path else ""
        self.unit_mixer = unit_mixer
        if unit_mixer is None and self.cluster_model_path and os.path.isfile(self.cluster_model_path):
            self.unit_mixer = load_cluster_or_index(self.cluster_model_path, feature_retrieval)
        self.enhancer: Enhancer | None = None
        if nsf_hifigan_enhance and self.diffusion is not None and shallow_diffusion:
            logger.info("-eh/--enhance is ignored with shallow diffusion")
        elif nsf_hifigan_enhance:
            path = os.path.join(os.fspath(pretrain_dir), "nsf_hifigan", "model")
            if not os.path.isfile(path) and os.path.isfile(path + ".ckpt"):
                raise FileNotFoundError(f"{path} not found but {path}.ckpt is there: the 2024.02 NSF-HiFiGAN "
                                        f"release ships model.ckpt; rename it to {path} (keep config.json "
                                        "next to it)")
            self.enhancer = Enhancer("nsf-hifigan", path, device=self.dev)
        if spk_mix_enable and len(self.spk2id) > 1:
            self.enable_spk_mix()
        self._f0_predictor = None
        self._f0_key: tuple[str, float] | None = None

    def load_model(self, spk_mix_enable: bool = False) -> LoadedGenerator:
        """(Re)load the So-VITS generator from `net_g_path` (4.1's method; also after `unload_model`)."""
        loaded = load_generator(self.net_g_path, self.hps_ms, self.config_path, self.dev)
        self.net_g_ms, self.dtype = loaded.net, loaded.dtype
        self.synthesizer = self._synthesizer_for(loaded.net)
        if (spk_mix_enable or self.spk_mix_enable) and len(self.spk2id) > 1:  # a reload keeps mixing on
            self.enable_spk_mix()
        return loaded

    def _synthesizer_for(self, net: torch.nn.Module | None) -> Any:
        """What runs the generator: the network itself, or its ONNX Runtime graph with --onnx."""
        if net is None or not self._onnx:
            return net
        from export.onnx import OnnxSynthesizer  # onnxruntime is imported only when asked for

        return OnnxSynthesizer(net, self.net_g_path, self.config_path)

    def unload_model(self) -> None:
        """Free the generator and the enhancer, as 4.1 does; `load_model` brings the generator back."""
        self.net_g_ms = self.synthesizer = self.enhancer = None
        self.clear_empty()

    @staticmethod
    def clear_empty() -> None:
        """Return freed memory: Python garbage, then the CUDA cache."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def diffusion_used(self) -> bool:
        return self.shallow_diffusion or self.only_diffusion

    @property
    def output_mode(self) -> str:
        """What runs, as 4.1's result names say it: 'diff' (-od), 'sovdiff' (-shd) or 'sovits'."""
        return "diff" if self.only_diffusion else "sovdiff" if self.shallow_diffusion else "sovits"

    def check_k_step(self, k_step: int) -> None:
        """Fail before any audio work when -ks does not fit the shallow-diffusion model."""
        if self.shallow_diffusion:
            self.diffusion.check_k_step(k_step, shallow=True)

    def enable_spk_mix(self) -> None:
        """Freeze the speaker-embedding tables so per-frame mixing weights can be used."""
        if self.net_g_ms is not None:
            self.net_g_ms.EnableCharacterMix(len(self.spk2id), self.dev)
        if self.diffusion is not None:
            self.diffusion.enable_spk_mix(self.spk2id)
        self.spk_mix_enable = True

    def speaker_id(self, speaker: str | int) -> int:
        """Config id of a speaker name (or a valid integer id)."""
        if isinstance(speaker, int) and not isinstance(speaker, bool):
            if 0 <= speaker < len(self.spk2id):  # 4.1 also let id == count through, then crashed
                return speaker
        elif speaker in self.spk2id:
            return int(self.spk2id[speaker])
        raise SvcError(f"The name you entered is not in the speaker list! Speaker {speaker!r} is not in "
                       f"{self.spk_map_path} spk (available: {', '.join(self.spk2id)})")

    def check_cluster(self, ratio: float) -> None:
        """Fail early when `ratio` asks for clustering / retrieval without a loaded file (4.1 crashed later)."""
        if ratio != 0 and self.unit_mixer is None:
            path = self.cluster_model_path or default_cluster_path()
            how = "python train_index.py -c configs/config.json" if path.endswith(".pkl") \
                else "python cluster/train_cluster.py"
            raise SvcError(f"cluster ratio {ratio} given but {path} not found; train it ({how}) or set -cr 0")

    def get_unit_f0(self, wav: np.ndarray, tran: float, cluster_infer_ratio: float, speaker: str | int,
                    f0_filter: bool, f0_predictor: str, cr_threshold: float = 0.05
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(units [1, C, T], f0 [1, T] in Hz shifted by `tran`, uv [1, T]) of a piece [L] at the model rate."""
        key = (f0_predictor, float(cr_threshold))
        if self._f0_key != key:
            with self.stage_hook("loading"):
                self._f0_predictor = get_f0_predictor(f0_predictor, hop_length=self.hop_size,
                                                      sampling_rate=self.target_sample, device=str(self.dev),
                                                      threshold=cr_threshold)
            self._f0_key = key
        with self.stage_hook("F0"):
            f0, uv = self._f0_predictor.compute_f0_uv(wav)
        if f0_filter and np.sum(f0) == 0:
            raise F0FilterException("No voice detected")
        f0 = torch.FloatTensor(np.asarray(f0, dtype=np.float32)).to(self.dev) * 2 ** (tran / 12)
        uv = torch.FloatTensor(np.asarray(uv, dtype=np.float32)).to(self.dev)
        c = self.encode_units(torch.from_numpy(wav), f0.shape[0])
        if cluster_infer_ratio != 0:
            self.check_cluster(cluster_infer_ratio)
            sid = self.speaker_id(speaker)
            name = speaker if isinstance(speaker, str) else next(n for n, i in self.spk2id.items() if i == sid)
            retrieval = self.unit_mixer.kind == "index"
            if retrieval:
                logger.info("starting feature retrieval...")
            with self.stage_hook("cluster"):
                mixed = self.unit_mixer.mix(c.T.float().cpu().numpy(), name, sid, float(cluster_infer_ratio))
            if retrieval:
                logger.info("end feature retrieval...")
            c = torch.from_numpy(np.ascontiguousarray(np.asarray(mixed, dtype=np.float32).T)).to(self.dev)
        return c.unsqueeze(0), f0.unsqueeze(0), uv.unsqueeze(0)

    def encode_units(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Speech-encoder units of a piece [L] at the model rate, stretched to n_frames: [C, T]."""
        with self.stage_hook("encoder"):
            wav16k = resample(wav.float().to(self.dev)[None], self.target_sample, 16000)[0]
            c = self.hubert_model.encoder(wav16k)
            return f0_math.repeat_expand_2d(c.squeeze(0), n_frames, self.unit_interpolate_mode)

    def _convert(self, wav: np.ndarray, speaker: str | int | torch.Tensor, opts: InferOptions,
                 frame: int = 0) -> tuple[torch.Tensor, int]:
        """Convert a piece [L] at the model rate: (audio float32 [N] on CPU, frames T)."""
        if self.net_g_ms is None and not self.only_diffusion:
            raise SvcError(f"{self.net_g_path} is unloaded; load the model again (load_model) to convert")
        mixing = isinstance(speaker, torch.Tensor)
        sid = None if mixing else torch.LongTensor([[self.speaker_id(speaker)]]).to(self.dev)
        c, f0, uv = self.get_unit_f0(wav, opts.tran, 0.0 if mixing else opts.cluster_infer_ratio,
                                     None if mixing else speaker, opts.f0_filter, opts.f0_predictor,
                                     opts.cr_threshold)
        n_frames = f0.size(1)
        if mixing:  # where the frame budget runs short (non-44.1 kHz input) the last mix holds
            sid = speaker[:, torch.arange(frame, frame + n_frames).clamp(max=speaker.shape[1] - 1)].T.to(self.dev)
        c, f0, uv = c.to(self.dtype), f0.to(self.dtype), uv.to(self.dtype)
        start = time.time()
        with torch.no_grad():
            vol = volume_extract(torch.from_numpy(wav).to(self.dev)[None], self.hop_size)[None].to(self.dtype) \
                if self.vol_embedding else None
            if self.only_diffusion:
                audio = torch.from_numpy(wav).to(self.dev)  # as in 4.1: no So-VITS pass, the input goes on
            else:
                predict = opts.auto_predict_f0 and self.has_f0_decoder
                with self.stage_hook("synthesizer"), autocast(self.dev, torch.bfloat16 if self.bf16 else None):
                    audio, f0 = self.synthesizer.infer(c, f0=f0, g=sid, uv=uv, predict_f0=predict,
                                                       noice_scale=opts.noice_scale, vol=vol)
                audio = audio[0, 0].float()
            if self.diffusion_used:
                if self.shallow_diffusion and opts.second_encoding:
                    # Units of the So-VITS output describe the voice the diffusion refines (4.1 -se).
                    c = self.encode_units(audio, n_frames)[None]
                spk = self.diffusion.speaker_input(sid if mixing else speaker, self.spk2id)
                with self.stage_hook("diffusion"):
                    audio = self.diffusion.render(c, f0, vol, audio, spk, opts.k_step,
                                                  shallow=self.shallow_diffusion)
            if self.enhancer is not None:
                with self.stage_hook("enhancer"), seeded(self.dev):  # the vocoder's source noise: see seeded
                    audio, _ = self.enhancer.enhance(audio[None], self.target_sample, f0[:, :, None].float(),
                                                     self.hop_size, adaptive_key=opts.enhancer_adaptive_key)
            if opts.loudness_envelope_adjustment != 1:
                audio = change_rms(wav, self.target_sample, audio, self.target_sample,
                                   opts.loudness_envelope_adjustment)
        logger.info("vits use time:%s", time.time() - start)
        return audio.cpu(), n_frames

    def infer(self, speaker: str | int | torch.Tensor, tran: float, raw_path: PathLike | BinaryIO,
              cluster_infer_ratio: float = 0, auto_predict_f0: bool = False, noice_scale: float = 0.4,
              f0_filter: bool = False, f0_predictor: str = "pm", enhancer_adaptive_key: float = 0,
              cr_threshold: float = 0.05, k_step: int = 100, frame: int = 0, spk_mix: bool = False,
              second_encoding: bool = False, loudness_envelope_adjustment: float = 1
              ) -> tuple[torch.Tensor, int, int]:
        """4.1's `Svc.infer` on a WAV: (audio float32 [N] at the model rate, N, frames T). `speaker`: a name,
        an id, or with `spk_mix` the song's mix weights [n_spk, frames] (from `frame` on)."""
        opts = _options(locals())
        if spk_mix and not isinstance(speaker, torch.Tensor):
            raise SvcError("spk_mix needs the mixing weights tensor as `speaker`")
        self.check_k_step(k_step)
        try:
            audio, n_frames = self.convert_piece(read_wav(raw_path, self.target_sample), speaker, opts, frame)
        finally:
            release_memory()
        return audio, audio.shape[-1], n_frames

    def convert_piece(self, wav: np.ndarray, speaker: str | int | torch.Tensor, opts: InferOptions,
                      frame: int = 0) -> tuple[torch.Tensor, int]:
        """`_convert`, with running out of memory turned into advice. Leaves the heap as it is: a stream's chunks
        of one length reuse it; the song paths trim it after each piece."""
        try:
            return self._convert(wav, speaker, opts, frame)
        except (RuntimeError, MemoryError) as err:
            text = str(err).lower()
            if not isinstance(err, (torch.OutOfMemoryError, MemoryError)) and "out of memory" not in text \
                    and "can't allocate memory" not in text:
                raise
            gpu = self.dev.type == "cuda"
            raise SvcError(f"Out of {'GPU ' if gpu else ''}memory on a {len(wav) / self.target_sample:.1f} s "
                           "slice — use -cl 30 (forced slicing), raise -sd to -30 (more silence cuts)"
                           + (", or --device cpu" if gpu else "")) from err

    def song_speaker(self, spk: str | int | Mapping[int, list], opts: InferOptions) -> str | int | dict:
        """Check -cl, -ks, the speaker (or mix map, enabling mixing on first use) and -cr before any audio work;
        returns the speaker, or the validated map when mixing. SvcError / SpkMixError otherwise."""
        if 0 < opts.clip_seconds < (shortest := MIN_CLIP_FRAMES * self.hop_size / self.target_sample):
            raise SvcError(f"forced slices (-cl) must be 0 or at least {shortest:.3f} s ({MIN_CLIP_FRAMES} frames "
                           f"of {self.hop_size} samples at {self.target_sample} Hz), got {opts.clip_seconds:g} s")
        self.check_k_step(opts.k_step)
        if isinstance(spk, Mapping):
            if not opts.use_spk_mix:
                raise SvcError("a speaker-mix map was given without use_spk_mix")
            if len(self.spk2id) > 1:
                if not self.spk_mix_enable:
                    self.enable_spk_mix()
                return validate_spk_mix_map(spk, self.spk2id)
            spk = next(iter(self.spk2id))  # nothing to mix with one speaker (4.1 does the same)
        self.speaker_id(spk)
        self.check_cluster(opts.cluster_infer_ratio)
        return spk

    def iter_slice_inference(self, audio: Audio, spk: str | int | Mapping[int, list], opts: InferOptions,
                             progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """Convert a song slice by slice, yielding float32 blocks at the model rate; `spk`: see `song_speaker`.
        `progress(i, n)`: before chunk i of n, and (n, n) at the end. `song_speaker`'s errors come at once."""
        speaker = self.song_speaker(spk, opts)
        if opts.auto_predict_f0 and not self.has_f0_decoder:
            logger.warning("this model has no F0 predictor: -a/--auto_predict_f0 is ignored")
        limit = WHISPER_MAX_SECONDS if self.speech_encoder.startswith("whisper") else math.inf

        def convert(wav: np.ndarray, speaker: str | int | torch.Tensor, frame: int) -> tuple[np.ndarray, int]:
            if len(wav) / self.target_sample > limit:
                raise SvcError(f"{self.speech_encoder} takes at most {limit:g} s per slice, -p padding included "
                               f"(this one is {len(wav) / self.target_sample:.1f} s); use -cl 25 -lg 1")
            try:
                audio, n_frames = self.convert_piece(wav, speaker, opts, frame)
            finally:
                release_memory()  # a long song's peak stays that of its longest piece
            return audio.numpy(), n_frames

        return iter_song(convert, self.target_sample, self.hop_size, audio, speaker, opts, progress,
                         lambda name: self.stage_hook(name))

    def slice_inference(self, raw_audio_path: Audio, spk: str | int | Mapping[int, list], tran: float,
                        slice_db: float = -40, cluster_infer_ratio: float = 0, auto_predict_f0: bool = False,
                        noice_scale: float = 0.4, pad_seconds: float = 0.5, clip_seconds: float = 0,
                        lg_num: float = 0, lgr_num: float = 0.75, f0_predictor: str = "pm",
                        enhancer_adaptive_key: float = 0, cr_threshold: float = 0.05, k_step: int = 100,
                        use_spk_mix: bool = False, second_encoding: bool = False,
                        loudness_envelope_adjustment: float = 1) -> np.ndarray:
        """4.1's `slice_inference`: the converted song as one float32 array [N] at the model rate."""
        return np.concatenate(list(self.iter_slice_inference(raw_audio_path, spk, _options(locals()))))

    def convert_file(self, audio: Audio, out_path: PathLike, spk: str | int | Mapping[int, list],
                     opts: InferOptions, wav_format: str = "flac",
                     progress: Callable[[int, int], None] | None = None) -> int:
        """Stream the conversion, clipped to [-1, 1], into `<out_path>.part`, renamed when complete;
        returns samples written. DiskFullError when the disk fills up (no file is left)."""
        out_path = os.fspath(out_path)
        tmp = f"{out_path}.part"
        blocks = self.iter_slice_inference(audio, spk, opts, progress)
        written = 0

        @contextlib.contextmanager
        def writing() -> Iterator[None]:
            with self.stage_hook("writing"):
                try:
                    yield
                except (OSError, RuntimeError) as err:
                    if not is_disk_full(err, folder := Path(out_path).parent):
                        raise
                    raise DiskFullError(f"the disk of {folder} is full: writing {Path(out_path).name} stopped "
                                        f"after {written / self.target_sample:.1f} s of audio; free some space "
                                        "and run again") from None

        try:
            with writing():
                out = sf.SoundFile(tmp, "w", samplerate=self.target_sample, channels=1, format=wav_format.upper())
            try:
                for block in blocks:
                    if not np.isfinite(block).all():
                        models = " or ".join(([] if self.only_diffusion else [self.net_g_path])
                                             + ([self.diffusion.model_path] if self.diffusion_used else []))
                        raise SvcError(f"the model produced NaN/inf audio; {models} looks broken "
                                       "(did its training diverge?); nothing was written")
                    with writing():
                        out.write(np.clip(block, -1.0, 1.0))
                    written += len(block)
            finally:
                with writing():
                    out.close()
            with writing():
                os.replace(tmp, out_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return written
