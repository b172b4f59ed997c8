"""Tutorial step 2 (`preprocess_flist_config.py`): train/val file lists and the two generated configs.

Per speaker folder of `dataset/44k`, clips shorter than 0.3 s are dropped, the rest shuffled, 2 go to
validation and the others to training; both lists are shuffled again and written one UTF-8 path per
line. `configs/config.json` and `configs/diffusion.yaml` are the templates with the speaker map, the
encoder name and width, `--vol_aug` and `--tiny` applied.
"""
from __future__ import annotations

import copy
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from core.atomic import write_bytes_atomic
from core.config import ConfigError, dump_config, load_config
from core.features import DatasetError, list_speakers
from vencoder import ENCODER_DIMS  # output width per `--speech_encoder` name

__all__ = ["FlistConfigResult", "assign_speaker_ids", "clip_duration", "patch_diffusion_config",
           "patch_sovits_config", "preprocess_flist_config", "risky_characters", "split_dataset", "write_filelist"]

PathLike = str | os.PathLike
logger = logging.getLogger(__name__)

MIN_CLIP_SECONDS = 0.3
VAL_CLIPS_PER_SPEAKER = 2
TINY_FILTER_CHANNELS = 512
# Characters that break the one-path-per-line list format (the reader splits on "|").
_LIST_BREAKERS = ("|", "\n", "\r")


@dataclass
class FlistConfigResult:
    """What one run produced: list lines, the speaker map and the written files."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    spk: dict[str, int] = field(default_factory=dict)
    config_path: str = ""
    diffusion_path: str = ""


# --- dataset scan and split ---
def risky_characters(name: str) -> list[str]:
    """Characters of `name` outside ASCII, in order of appearance (hyphens and spaces are harmless)."""
    return list(dict.fromkeys(c for c in name if ord(c) > 127))


def clip_duration(path: PathLike, sampling_rate: int = 44100) -> float:
    """Seconds of a dataset clip from its header, checking it is what training reads correctly.

    Raises:
        DatasetError: unreadable, or not a mono 16-bit PCM WAV at `sampling_rate` (the training loader
            divides samples by 32768 and requires the model rate, so anything else trains on garbage).
    """
    try:
        info = sf.info(os.fspath(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DatasetError(f"{os.fspath(path)} is not a readable WAV file ({err})") from None
    problems = []
    if info.format not in ("WAV", "WAVEX") or info.subtype != "PCM_16":
        problems.append(f"{info.format} {info.subtype_info}")
    if info.channels != 1:
        problems.append(f"{info.channels} channels")
    if info.samplerate != sampling_rate:
        problems.append(f"{info.samplerate} Hz")
    if problems:
        raise DatasetError(
            f"{os.fspath(path)} is {', '.join(problems)}; so-vits-svc expects {sampling_rate} Hz mono "
            "16-bit PCM from resample.py"
        )
    return info.frames / float(info.samplerate)


def _speaker_clips(source_dir: str, speaker: str, sampling_rate: int, bad: list[str]) -> list[str]:
    """List paths `<source_dir>/<speaker>/<name>` of one speaker's usable clips, sorted; misfits go to `bad`."""
    folder = os.path.join(source_dir, speaker)
    clips = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith("wav") or name.startswith("."):
            continue
        path = "/".join([source_dir, speaker, name])
        if not os.path.isfile(os.path.join(folder, name)):
            continue
        if any(c in name for c in _LIST_BREAKERS):
            logger.warning(f"Skip {path!r}: '|' and line breaks cannot appear in file-list paths; rename it")
            continue
        risky = risky_characters(name)
        if risky:
            logger.warning(f"Detected non-ASCII file name: {path} (characters {' '.join(risky)})")
        try:
            seconds = clip_duration(path, sampling_rate)
        except DatasetError as err:
            logger.error(f"Reading {path}")
            bad.append(str(err))
            continue
        if seconds < MIN_CLIP_SECONDS:
            logger.info(f"Skip too short audio: {path}")
            continue
        clips.append(path)
    return clips


def split_dataset(source_dir: PathLike, rng: random.Random, sampling_rate: int = 44100,
                  progress: bool = True) -> tuple[list[str], list[str], list[str]]:
    """The 4.1 split: per speaker shuffle, first 2 clips to validation, the rest to training.

    List paths are `<source_dir>/<speaker>/<file>` joined by "/"; every clip must be at `sampling_rate`.
    Returns (train paths, val paths, speakers), both lists shuffled by `rng`.
    Raises:
        DatasetError: no speaker folder, or clips that training cannot read (all of them listed).
    """
    from tqdm import tqdm

    root = os.fspath(source_dir)
    root = root.rstrip("/\\") or root
    speakers = []
    for speaker in list_speakers(root):
        if any(c in speaker for c in _LIST_BREAKERS):
            logger.warning(f"Skip speaker folder {speaker!r}: '|' and line breaks cannot appear in "
                           "file-list paths")
            continue
        speakers.append(speaker)
    if not speakers:
        raise DatasetError(f"no speaker folders in {root}: run python resample.py first")
    train: list[str] = []
    val: list[str] = []
    bad: list[str] = []
    for speaker in tqdm(speakers, disable=not progress):
        risky = risky_characters(speaker)
        if risky:
            logger.warning(f"Detected non-ASCII speaker name: {speaker} (characters {' '.join(risky)})")
        clips = _speaker_clips(root, speaker, sampling_rate, bad)
        rng.shuffle(clips)
        val += clips[:VAL_CLIPS_PER_SPEAKER]
        train += clips[VAL_CLIPS_PER_SPEAKER:]
        if not clips:
            logger.warning(f"speaker {speaker} has no usable clips")
        elif len(clips) <= VAL_CLIPS_PER_SPEAKER:
            logger.warning(f"speaker {speaker} has {len(clips)} clips; all went to validation")
    if bad:
        shown = bad[:10] + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else [])
        raise DatasetError(
            f"{len(bad)} clip(s) in {root} cannot be used for training (run python resample.py on the "
            "raw data, or remove them):\n  " + "\n  ".join(shown)
        )
    rng.shuffle(train)
    rng.shuffle(val)
    if not train:
        logger.warning("the training list is empty: every speaker needs more than 2 clips of at least 0.3 s")
    return train, val, speakers


def write_filelist(path: PathLike, paths: list[str], progress: bool = True) -> None:
    """Write one path per line, `\\n`-terminated, UTF-8 on every platform (folders created)."""
    from tqdm import tqdm

    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    text = "".join(p + "\n" for p in tqdm(paths, disable=not progress))
    write_bytes_atomic(path, text.encode("utf-8"))


# --- configs ---
def assign_speaker_ids(speakers: list[str], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """Speaker map: ids of `existing` (an earlier config.json) are kept, other speakers get the next free
    ids in name order (0..n-1 sorted without `existing`, so ids do not depend on the filesystem).

    Speakers of `existing` without a folder are dropped, so ids can have gaps (`n_speakers` = max id + 1).
    """
    kept = {s: int(existing[s]) for s in speakers if existing and s in existing}
    next_id = max(kept.values(), default=-1) + 1
    spk: dict[str, int] = {}
    for speaker in sorted(speakers):
        if speaker in kept:
            spk[speaker] = kept[speaker]
        else:
            spk[speaker] = next_id
            next_id += 1
    return dict(sorted(spk.items(), key=lambda item: item[1]))


def _dims_for(speech_encoder: str) -> dict[str, int]:
    """Model fields set for an encoder: ssl_dim = gin_channels = dim; filter_channels = dim only for
    encoders of 768 or more channels (4.1 leaves it for the 256-dim ones)."""
    dim = ENCODER_DIMS[speech_encoder]
    fields = {"ssl_dim": dim, "gin_channels": dim}
    if dim >= 768:
        fields["filter_channels"] = dim
    return fields


def patch_sovits_config(template: Mapping[str, Any], spk: Mapping[str, int], speech_encoder: str, vol_aug: bool,
                        tiny: bool) -> dict[str, Any]:
    """config.json from its template (not modified); raises KeyError for an unknown `speech_encoder`."""
    config = copy.deepcopy(dict(template))
    model = config["model"]
    config["spk"] = dict(spk)
    model["n_speakers"] = max(spk.values(), default=-1) + 1
    model["speech_encoder"] = speech_encoder
    model.update(_dims_for(speech_encoder))
    if vol_aug:
        config["train"]["vol_aug"] = True
        model["vol_embedding"] = True
    if tiny:
        model["filter_channels"] = TINY_FILTER_CHANNELS
    return config


def patch_diffusion_config(template: Mapping[str, Any], spk: Mapping[str, int],
                           speech_encoder: str) -> dict[str, Any]:
    """diffusion.yaml from its template: speaker count and map, encoder name and width."""
    config = copy.deepcopy(dict(template))
    config["model"]["n_spk"] = max(spk.values(), default=-1) + 1
    config["data"]["encoder"] = speech_encoder
    config["data"]["encoder_out_channels"] = ENCODER_DIMS[speech_encoder]
    config["spk"] = dict(spk)
    return config


def _existing_speaker_map(config_path: str) -> dict[str, int] | None:
    """The `spk` map of an earlier generated config.json, or None (absent or unusable)."""
    if not os.path.isfile(config_path):
        return None
    try:
        spk = load_config(config_path).to_dict().get("spk")
    except ConfigError as err:
        logger.warning(f"Ignoring the speaker ids of {config_path}: {err}")
        return None
    ids = list(spk.values()) if isinstance(spk, Mapping) else []
    valid = bool(ids) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    if not valid or len(set(ids)) != len(ids):
        logger.warning(f"Ignoring the speaker ids of {config_path}: spk is not a map of distinct ids")
        return None
    return dict(spk)


def _default_template_dir() -> str:
    # Like 4.1 the templates are read relative to the working directory; a run from elsewhere falls
    # back to the ones shipped next to this package.
    if os.path.isdir("configs_template"):
        return "configs_template"
    return str(Path(__file__).resolve().parents[1] / "configs_template")


def preprocess_flist_config(train_list: PathLike = "./filelists/train.txt",
                            val_list: PathLike = "./filelists/val.txt", source_dir: PathLike = "./dataset/44k",
                            speech_encoder: str = "vec768l12",
                            vol_aug: bool = False, tiny: bool = False, seed: int | None = None,
                            config_dir: PathLike = "configs", template_dir: PathLike | None = None,
                            progress: bool = True) -> FlistConfigResult:
    """Write the file lists, `<config_dir>/config.json` and `<config_dir>/diffusion.yaml`.

    Args:
        vol_aug: set `train.vol_aug` and `model.vol_embedding`.
        tiny: start from `config_tiny_template.json` and force `filter_channels` 512.
        seed: seed of the split shuffles; None = unseeded like 4.1.
        config_dir: where the configs go; an existing config.json there keeps its speaker ids.
        template_dir: folder of the templates; None = `configs_template` (see _default_template_dir).
    Raises:
        DatasetError: see split_dataset; ValueError: unknown `speech_encoder`.
    """
    if speech_encoder not in ENCODER_DIMS:
        raise ValueError(f"unknown speech encoder {speech_encoder!r}; choose one of {', '.join(ENCODER_DIMS)}")
    templates = Path(template_dir if template_dir is not None else _default_template_dir())
    sovits_template = load_config(templates / ("config_tiny_template.json" if tiny else "config_template.json"))
    diffusion_template = load_config(templates / "diffusion_template.yaml")

    rng = random.Random(seed)
    sampling_rate = int(sovits_template.data.sampling_rate)
    train, val, speakers = split_dataset(source_dir, rng, sampling_rate, progress)

    config_path = os.path.join(os.fspath(config_dir), "config.json")
    existing = _existing_speaker_map(config_path)
    spk = assign_speaker_ids(speakers, existing)
    if existing is not None:
        logger.info(f"Keeping the speaker ids of the existing {config_path}: {spk}")

    logger.info(f"Writing {os.fspath(train_list)}")
    write_filelist(train_list, train, progress)
    logger.info(f"Writing {os.fspath(val_list)}")
    write_filelist(val_list, val, progress)

    os.makedirs(config_dir, exist_ok=True)
    sovits = patch_sovits_config(sovits_template.to_dict(), spk, speech_encoder, vol_aug, tiny)
    diffusion = patch_diffusion_config(diffusion_template.to_dict(), spk, speech_encoder)
    diffusion_path = os.path.join(os.fspath(config_dir), "diffusion.yaml")
    logger.info(f"Writing to {config_path}")
    write_bytes_atomic(config_path, dump_config(sovits).encode("utf-8"))
    logger.info(f"Writing to {diffusion_path}")
    write_bytes_atomic(diffusion_path, dump_config(diffusion, yaml_style=True).encode("utf-8"))
    return FlistConfigResult(train, val, spk, config_path, diffusion_path)
