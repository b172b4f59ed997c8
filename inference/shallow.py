"""The diffusion side of `Svc`: shallow diffusion (-shd: `k_step` steps of noise on the vocoder mel of the
So-VITS audio, walked back by the diffusion model) and diffusion-only conversion (-od: from pure noise)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from core.schema import SpeakerMap, read_config
from inference.options import SvcError, seeded
from modules.mel_processing import volume_extract

if TYPE_CHECKING:
    from core.config import HParams
    from diffusion.unit2mel import Unit2Mel
    from diffusion.vocoder import Vocoder

__all__ = ["DiffusionSide", "NO_DIFFUSION", "load_diffusion"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
NO_DIFFUSION = "No diffusion model or config found. Shallow diffusion mode will False"


@dataclass(frozen=True)
class _Speakers:
    spk: SpeakerMap | None = None  # checked as train_diff.py checks it


class DiffusionSide:
    """A loaded Unit2Mel (eval mode) + its vocoder, with the settings of its config: sample_rate, hop_size,
    encoder, unit_interpolate_mode, spk2id (they drive -od), method, speedup; use_tqdm: sampler progress bar."""

    def __init__(self, model: "Unit2Mel", vocoder: "Vocoder", args: "HParams", model_path: str,
                 config_path: str) -> None:
        self.model, self.vocoder = model, vocoder
        self.model_path, self.config_path = model_path, config_path
        data = args.get("data") or {}
        infer = args.get("infer") or {}
        self.sample_rate = int(data.get("sampling_rate") or 44100)
        self.hop_size = int(data.get("block_size") or 512)
        self.encoder = str(data.get("encoder") or "vec768l12")
        self.unit_interpolate_mode = data.get("unit_interpolate_mode") or "left"
        # Absent keys take the template's values; an explicit null method means the plain DDPM loop.
        self.method = infer.get("method", "dpm-solver++")
        self.speedup = int(infer.get("speedup", 10))
        speakers = read_config(args, _Speakers, config_path, for_training=False).spk or {}
        self.spk2id: dict[str, int] = {str(k): v for k, v in speakers.items()}
        self.n_spk = int(model.n_spk)
        self.units_width = int(model.input_channel)
        self.use_tqdm = True
        self._mix_map: Tensor | None = None  # [S_caller, n_spk] caller speaker id -> diffusion speaker id
        self._warned: set[str] = set()
        if self.n_spk > 1:
            bad = {n: i for n, i in self.spk2id.items() if not 0 <= i < self.n_spk}
            if bad:
                raise SvcError(f"{config_path}: speaker ids {bad} are outside 0..{self.n_spk - 1} "
                               f"(model.n_spk = {self.n_spk})")

    @property
    def k_step_max(self) -> int:
        """Deepest step the model was trained for (timesteps for a full model)."""
        return int(self.model.k_step_max)

    def check_k_step(self, k_step: int, shallow: bool) -> None:
        """SvcError (4.1's text + numbers) for -ks > k_step_max, or -od (shallow=False) on a shallow-only model."""
        from diffusion.diffusion import DiffusionStepError

        try:
            self.model.decoder.check_k_step(int(k_step), shallow=shallow)
        except DiffusionStepError as err:
            raise SvcError(f"{err} [diffusion model {self.model_path}]") from err

    def _id_of_name(self, name: str) -> int:
        if name in self.spk2id:
            return self.spk2id[name]
        if self.n_spk > 1 and name not in self._warned:
            self._warned.add(name)
            logger.warning("speaker %r is not in the spk map of %s; the diffusion model uses its speaker 0",
                           name, self.config_path)
        return 0

    def enable_spk_mix(self, spk2id: dict[str, int]) -> None:
        """Prepare mixing with weights over the caller's speakers `spk2id` (name -> row), mapped to diffusion
        speakers by name (missing -> 0): the two configs may number them differently."""
        if self.n_spk <= 1:
            return
        self.model.init_spkmix(self.n_spk)
        table = torch.zeros(max(int(i) for i in spk2id.values()) + 1, self.n_spk)
        for name, row in spk2id.items():
            table[int(row), self._id_of_name(name)] = 1.0
        self._mix_map = table

    def speaker_input(self, speaker: str | int | Tensor, spk2id: dict[str, int]) -> Tensor:
        """Unit2Mel's `spk_id`: [[id]] (long) for a name / caller id; mix weights [T, S_caller] -> [T, n_spk]."""
        device = self.model.unit_embed.weight.device
        if isinstance(speaker, Tensor):
            if self.n_spk <= 1:
                return torch.zeros(1, 1, dtype=torch.long, device=device)
            if self._mix_map is None:
                raise SvcError("per-frame speaker mixing needs enable_spk_mix() first")
            return speaker.float().to(device) @ self._mix_map.to(device)
        if isinstance(speaker, int) and not isinstance(speaker, bool):  # a caller id: its name decides
            speaker = next((n for n, i in spk2id.items() if int(i) == speaker), None)
        sid = 0 if speaker is None else self._id_of_name(str(speaker))
        return torch.tensor([[sid]], dtype=torch.long, device=device)

    def render(self, units: Tensor, f0: Tensor, volume: Tensor | None, audio: Tensor, speaker: Tensor,
               k_step: int, shallow: bool) -> Tensor:
        """Diffusion + vocoder for one piece: audio float32 [T * hop] at the vocoder rate, from units [1, C, T],
        f0 [1, T] Hz, volume [1, T] (None: measured on `audio`), audio [N] (the So-VITS output, whose mel
        shallow diffusion starts from, or the input with -od) and speaker (from `speaker_input`)."""
        device = self.model.unit_embed.weight.device
        audio = audio.float().to(device)
        gt_spec = self.vocoder.extract(audio[None], self.sample_rate) if shallow else None  # [1, T, M]
        if volume is None:
            volume = volume_extract(audio[None], self.hop_size)[None]
        units = units.float().to(device).transpose(1, 2)  # [1, T, C]
        f0 = f0.float().to(device)[:, :, None]  # [1, T, 1]
        volume = volume.float().to(device)[:, :, None]  # [1, T, 1]
        with seeded(device):
            mel = self.model(units, f0, volume, spk_id=speaker, gt_spec=gt_spec, infer=True,
                             infer_speedup=self.speedup, method=self.method, k_step=int(k_step),
                             use_tqdm=self.use_tqdm)
            out = self.vocoder.infer(mel, f0)
        return out.reshape(-1).float()


def load_diffusion(model_path: PathLike, config_path: PathLike, device: torch.device) -> DiffusionSide | None:
    """Load the diffusion model, its config and vocoder; None (with 4.1's line) without the model file.
    Raises SvcError (no config), VocoderNotFoundError / VocoderLoadError (pretrain/nsf_hifigan missing or
    unfit), ConfigError / CheckpointError (unreadable config, model not matching it)."""
    model_path, config_path = os.fspath(model_path), os.fspath(config_path)
    if not os.path.isfile(model_path):
        logger.warning("%s (%s not found)", NO_DIFFUSION, model_path)
        return None
    if not os.path.isfile(config_path):
        raise SvcError(f"diffusion config {config_path} not found (use -dc)")
    from diffusion.unit2mel import load_model_vocoder

    logger.info(" [Loading] %s", model_path)
    model, vocoder, args = load_model_vocoder(model_path, device, config_path)
    logger.info("| Load HifiGAN: %s", args.vocoder.ckpt)
    logger.info("Removing weight norm...")
    side = DiffusionSide(model, vocoder, args, model_path, config_path)
    logger.info("Loaded diffusion model, sampler is %s, speedup: %s ", side.method, side.speedup)
    return side
