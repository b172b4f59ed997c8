"""What the web page does, without gradio: find models under trained/, hold the loaded model, convert audio
and typed text into results/ through the same code as inference_main.py, and run the model tools.

Heavy modules (torch, the model code) are imported on first use, so the page is served before they load.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from inference import command
from inference.serving import FifoLock

if TYPE_CHECKING:  # torch loads with the first model, not with the page
    from inference.infer_tool import Svc

__all__ = ["Cancelled", "ModelFiles", "ModelSlot", "WebError", "compress", "device_choices", "f0_availability",
           "folder_models", "mix"]

logger = logging.getLogger(__name__)
TRAINED = Path("trained")
CLUSTER_FILES = ("kmeans_10000.pt", "feature_and_index.pkl")  # 4.1's names, looked for in this order
DIFFUSION_CONFIGS = ("config.yaml", "diffusion.yaml")


class WebError(ValueError):
    """A request the page cannot carry out; the message says why and what to do."""


class Cancelled(Exception):
    """The conversion was stopped from the page; nothing was written."""


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model: generator + config, optional diffusion model + config, optional cluster/index."""

    model: str
    config: str
    diffusion_model: str = ""
    diffusion_config: str = ""
    cluster: str = ""

    def describe(self) -> str:
        parts = [f"model {self.model}", f"config {self.config}"]
        if self.diffusion_model:
            parts.append(f"diffusion {self.diffusion_model} + {self.diffusion_config or '(no config)'}")
        if self.cluster:
            parts.append(("feature index " if self.cluster.endswith(".pkl") else "cluster model ") + self.cluster)
        return ", ".join(parts)


def _step(path: Path) -> int:
    digits = path.stem.rpartition("_")[2]
    return int(digits) if digits.isdigit() else -1


def folder_files(folder: Path) -> ModelFiles | None:
    """The model a folder holds (exactly one *.pth and one *.json, as 4.1 asks), or None. Optional files go
    by their 4.1 names: the newest model_<step>.pt with config.yaml (or diffusion.yaml), kmeans_10000.pt
    or else feature_and_index.pkl."""
    pth, json_ = sorted(folder.glob("*.pth")), sorted(folder.glob("*.json"))
    if len(pth) != 1 or len(json_) != 1:
        return None
    diffusion = max((p for p in folder.glob("model_*.pt") if _step(p) >= 0), key=_step, default=None)
    diffusion_config = next((folder / n for n in DIFFUSION_CONFIGS if (folder / n).is_file()), None)
    cluster = next((folder / n for n in CLUSTER_FILES if (folder / n).is_file()), None)
    return ModelFiles(str(pth[0]), str(json_[0]), str(diffusion or ""), str(diffusion_config or ""),
                      str(cluster or ""))


def folder_models(root: Path = TRAINED) -> dict[str, ModelFiles]:
    """Every folder under `root` (any depth) that holds a model: its path relative to `root` -> its files."""
    if not root.is_dir():
        return {}
    found = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        if files := folder_files(folder):
            found[folder.relative_to(root).as_posix()] = files
    return found


def device_choices() -> list[str]:
    """'auto', 'cpu' and each CUDA device."""
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def f0_availability() -> tuple[list[str], dict[str, str]]:
    """(F0 predictors whose weights are here, {missing predictor: which file it needs})."""
    from modules.F0Predictor import F0_PREDICTORS
    from modules.F0Predictor.crepe.model import crepe_weights_path
    from modules.F0Predictor.fcpe.bundled import bundled_weights_path, missing_weights_message
    from modules.F0Predictor.rmvpe.inference import DEFAULT_PATH as RMVPE_PATH

    missing = {}
    try:
        crepe_weights_path("full")
    except FileNotFoundError as err:
        missing["crepe"] = str(err)
    if not os.path.isfile(RMVPE_PATH):
        missing["rmvpe"] = f"needs {RMVPE_PATH} (the RMVPE weights, rmvpe.pt) in the project folder"
    from modules.F0Predictor.fcpe.inference import DEFAULT_PATH as FCPE_PATH
    if not os.path.isfile(FCPE_PATH) and bundled_weights_path() is None:
        missing["fcpe"] = missing_weights_message()
    return [name for name in F0_PREDICTORS if name not in missing], missing


class ModelSlot:
    """The one loaded model of the page (a failed load keeps the previous one) and its conversions."""

    def __init__(self) -> None:
        self.svc: Svc | None = None
        self._lock = FifoLock()  # one load or conversion at a time, in the order asked (live chunks too)
        self._stop = threading.Event()
        self.converting = threading.Event()  # set while a song converts: Live pauses instead of queuing

    @property
    def speakers(self) -> list[str]:
        return list(self.svc.spk2id) if self.svc is not None else []

    def load(self, files: ModelFiles, device: str = "auto", enhance: bool = False, shallow_diffusion: bool = False,
             only_diffusion: bool = False) -> str:
        """Load `files` (replacing the loaded model only once the new one is ready); returns a status line."""
        from inference.infer_tool import Svc

        if (shallow_diffusion or only_diffusion) and not (files.diffusion_model and files.diffusion_config):
            raise WebError("shallow diffusion and diffusion-only need a diffusion model (model_<step>.pt) and its "
                           "config (config.yaml)")
        for path in (files.model, files.config):
            if not only_diffusion and not os.path.isfile(path):
                raise WebError(f"{path} not found")
        with self._lock:
            svc = Svc(files.model, files.config, None if device == "auto" else device, files.cluster, enhance,
                      files.diffusion_model, files.diffusion_config, shallow_diffusion, only_diffusion,
                      feature_retrieval=files.cluster.endswith(".pkl"))
            self._replace(svc)
        return f"Loaded on {svc.dev} ({svc.output_mode}): {files.describe()}. Speakers: {', '.join(svc.spk2id)}"

    def unload(self) -> str:
        with self._lock:
            if self.svc is None:
                return "No model is loaded."
            self._replace(None)
        return "Model unloaded; its memory is free."

    def _replace(self, svc: Svc | None) -> None:
        """Make `svc` the page's model; the one it replaces is freed, its generator first, then the rest."""
        from inference.infer_tool import Svc

        old, self.svc = self.svc, svc
        if old is not None:
            old.unload_model()
            del old  # the last reference: the encoder, F0 predictor and the rest are garbage now
            Svc.clear_empty()

    def _loaded(self) -> Svc:
        if self.svc is None:
            raise WebError("Load a model first (Inference tab, Model section).")
        return self.svc

    @contextlib.contextmanager
    def holding(self) -> Iterator[Svc]:
        """The loaded model, kept for one piece of work (waits for loads and other conversions)."""
        with self._lock:
            yield self._loaded()

    def stop(self) -> str:
        self._stop.set()
        return "Stopping after the current slice..."

    @contextlib.contextmanager
    def _stage(self, _name: str) -> Iterator[None]:
        if self._stop.is_set():
            raise Cancelled("Conversion stopped; nothing was written.")
        yield

    def convert(self, audio: str | os.PathLike, clean_name: str, speaker: str, tran: int, options: dict[str, Any],
                spk_mix_file: str | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
        """Convert the file `audio` as inference_main.py converts raw/<clean_name> with the same options (keys:
        its argument names); returns the file written in results/. Stopped by `stop` (Cancelled)."""
        from inference.infer_tool import InferOptions, format_wav
        from inference.speaker_mix import read_spk_mix_file

        args = command.defaults()
        unknown = set(options) - set(vars(args))
        if unknown:
            raise WebError(f"unknown option(s): {', '.join(sorted(unknown))}")
        vars(args).update(options)
        if problem := command.check_args(args):
            raise WebError(problem)
        spk_mix_map = read_spk_mix_file(spk_mix_file) if spk_mix_file else {}
        clean_name = Path(clean_name).name
        with self._lock, tempfile.TemporaryDirectory(prefix="sovits-web-") as tmp:
            self._stop.clear()
            svc = self._loaded()
            args.use_spk_mix = len(spk_mix_map) > 1 and len(svc.spk2id) > 1  # as the CLI: one entry, no mix
            opts = InferOptions.from_args(args, tran)
            spk = svc.song_speaker(spk_mix_map if args.use_spk_mix else speaker, opts)
            local = Path(tmp) / clean_name
            shutil.copyfile(audio, local)
            svc.stage_hook = self._stage
            self.converting.set()
            try:
                return command.convert_to_results(svc, args, clean_name, format_wav(local), tran, spk, opts, progress)
            finally:
                self.converting.clear()
                svc.stage_hook = contextlib.nullcontext

    def convert_text(self, text: str, language: str, voice: str, words_per_minute: int, pitch: int, speaker: str,
                     tran: int, options: dict[str, Any], spk_mix_file: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Path:
        """Speak `text` offline (eSpeak NG), resample to 44.1 kHz 16-bit and convert it as input `tts`."""
        import soundfile as sf
        import torch

        from modules.audio_resample import resample
        from webui.tts import synthesize

        self._loaded()
        speech, rate = synthesize(text, language, voice, words_per_minute, pitch)
        with tempfile.TemporaryDirectory(prefix="sovits-tts-") as tmp:
            path = Path(tmp) / "tts.wav"
            sf.write(path, resample(torch.from_numpy(speech)[None], rate, 44100)[0].numpy(), 44100, subtype="PCM_16")
            return self.convert(path, "tts", speaker, tran, options, spk_mix_file, progress)


def mix(models: list[str], rates: list[float], mode: str, config: str | None = None,
        output: str = "output.pth") -> str:
    """model_mix.py's static mix of `models` (one percentage each) into `output`; returns its path."""
    from core.config import load_config
    from export.mix import mix_model
    from generator import build_synthesizer

    if len(models) < 2:
        raise WebError("choose at least two models to mix")
    net_g = build_synthesizer(load_config(config)) if config else None
    return mix_model(models, rates, mode, output, net_g=net_g, config_path=config or "")


def compress(model: str, config: str, half: bool, folder: str = ".") -> str:
    """compress_model.py on `model` with its `config` (-hf: `half`), written to `folder`; returns the path."""
    from core.config import load_config
    from export.release import compress_model, default_release_path
    from generator import build_synthesizer

    hps = load_config(config)
    output = Path(folder) / Path(default_release_path(model, half)).name
    return str(compress_model(model, build_synthesizer(hps), hps, config, output, half).output)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors shown on the page as their message: the CLI's (the speaker-mix one among them), TTS's, and ours."""
    from webui.tts import TTSError

    return command.user_errors() + (TTSError, WebError, Cancelled)
