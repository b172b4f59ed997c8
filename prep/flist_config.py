"""Tutorial step 2 (`preprocess_flist_config.py`): train/val file lists and the two generated configs.

The lists hold one UTF-8 path per line. The configs are the templates with the speaker map, encoder name and
width, `--vol_aug` and `--tiny` applied; the user's own values in existing configs are kept.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import write_bytes_atomic
from core.config import ConfigError, dump_config, load_config
from core.features import DatasetError, clip_problem, list_speakers
from vencoder import ENCODER_DIMS  # output width per `--speech_encoder` name

__all__ = ["FlistConfigResult", "assign_speaker_ids", "keep_user_values",
           "patch_diffusion_config", "patch_sovits_config", "preprocess_flist_config", "risky_characters",
           "split_dataset", "write_filelist"]

PathLike = str | os.PathLike
logger = logging.getLogger(__name__)

MIN_CLIP_SECONDS = 0.3
VAL_CLIPS_PER_SPEAKER = 2
TINY_FILTER_CHANNELS = 512
TINY_KEYS = ("model.filter_channels", "model.upsample_initial_channel", "model.use_depthwise_conv",
             "model.flow_share_parameter")  # where the tiny template differs from the full one
# Characters that break the one-path-per-line list format (the reader splits on "|").
_LIST_BREAKERS = ("|", "\n", "\r")


@dataclass
class FlistConfigResult:
    """What one run produced: list lines, the speaker map, the written files and the skipped paths."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    spk: dict[str, int] = field(default_factory=dict)
    config_path: str = ""
    diffusion_path: str = ""
    skipped: list[str] = field(default_factory=list)


# --- dataset scan and split ---
def risky_characters(name: str) -> list[str]:
    """Characters of `name` outside ASCII, in order of appearance (hyphens and spaces are harmless)."""
    return list(dict.fromkeys(c for c in name if ord(c) > 127))


def _speaker_clips(source_dir: str, speaker: str, sampling_rate: int, bad: list[str], skipped: list[str]
                   ) -> list[str]:
    """List paths `<source_dir>/<speaker>/<name>` of one speaker's usable clips, sorted; misfits go to `bad`,
    names a file list cannot hold to `skipped`."""
    folder = os.path.join(source_dir, speaker)
    clips = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith("wav") or name.startswith(".") or not os.path.isfile(os.path.join(folder, name)):
            continue
        path = "/".join([source_dir, speaker, name])
        if any(c in name for c in _LIST_BREAKERS):
            logger.warning(f"Skip {path!r}: '|' and line breaks cannot appear in file-list paths; rename it")
            skipped.append(path)
            continue
        if risky := risky_characters(name):
            logger.warning(f"Detected non-ASCII file name: {path} (characters {' '.join(risky)})")
        problem, seconds = clip_problem(path, sampling_rate)
        if problem:
            logger.error(f"Reading {path}")
            bad.append(problem)
            continue
        if seconds < MIN_CLIP_SECONDS:
            logger.info(f"Skip too short audio: {path}")
            continue
        clips.append(path)
    return clips


def split_dataset(source_dir: PathLike, rng: random.Random, sampling_rate: int = 44100, progress: bool = True
                  ) -> tuple[list[str], list[str], list[str], list[str]]:
    """The 4.1 split: per speaker, clips under 0.3 s dropped, the rest shuffled, first 2 to validation, the others
    to training. List paths are `<source_dir>/<speaker>/<file>` joined by "/"; every clip must be at
    `sampling_rate`. Returns (train, val, speakers, skipped): the lists shuffled again by `rng`, and the paths a
    list cannot hold. Raises DatasetError for no speaker folder, or for clips training cannot read (all listed)."""
    from tqdm import tqdm

    root = os.fspath(source_dir)
    root = root.rstrip("/\\") or root
    speakers: list[str] = []
    skipped: list[str] = []
    for speaker in list_speakers(root):
        if any(c in speaker for c in _LIST_BREAKERS):
            logger.warning(f"Skip speaker folder {speaker!r}: '|' and line breaks cannot appear in "
                           "file-list paths")
            skipped.append(os.path.join(root, speaker))
            continue
        speakers.append(speaker)
    if not speakers:
        raise DatasetError(f"no speaker folders in {root}: run python resample.py first")
    train: list[str] = []
    val: list[str] = []
    bad: list[str] = []
    for speaker in tqdm(speakers, disable=not progress):
        if risky := risky_characters(speaker):
            logger.warning(f"Detected non-ASCII speaker name: {speaker} (characters {' '.join(risky)})")
        clips = _speaker_clips(root, speaker, sampling_rate, bad, skipped)
        rng.shuffle(clips)
        val += clips[:VAL_CLIPS_PER_SPEAKER]
        train += clips[VAL_CLIPS_PER_SPEAKER:]
        if not clips:
            logger.warning(f"speaker {speaker} has no usable clips")
        elif len(clips) <= VAL_CLIPS_PER_SPEAKER:
            logger.warning(f"speaker {speaker} has {len(clips)} clips; all went to validation")
    if bad:
        shown = bad[:10] + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else [])
        raise DatasetError(f"{len(bad)} clip(s) in {root} cannot be used for training (run python resample.py "
                           "on the raw data, or remove them):\n  " + "\n  ".join(shown))
    rng.shuffle(train)
    rng.shuffle(val)
    if not train:
        logger.warning("the training list is empty: every speaker needs more than 2 clips of at least 0.3 s")
    return train, val, speakers, skipped


def write_filelist(path: PathLike, paths: list[str], progress: bool = True) -> None:
    """Write one path per line, `\\n`-terminated, UTF-8 on every platform (folders created)."""
    from tqdm import tqdm

    logger.info(f"Writing {os.fspath(path)}")
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    text = "".join(p + "\n" for p in tqdm(paths, disable=not progress))
    write_bytes_atomic(path, text.encode("utf-8"))


# --- configs ---
def assign_speaker_ids(speakers: list[str], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """Speaker map: ids of `existing` (an earlier config.json) are kept, other speakers get the next free
    ids in name order (so ids do not depend on the filesystem). Speakers of `existing` without a folder are
    dropped, so ids can have gaps (`n_speakers` = max id + 1)."""
    spk = {s: int(existing[s]) for s in speakers if existing and s in existing}
    for speaker in sorted(set(speakers) - set(spk)):
        spk[speaker] = max(spk.values(), default=-1) + 1
    return dict(sorted(spk.items(), key=lambda item: item[1]))


def patch_sovits_config(template: Mapping[str, Any], spk: Mapping[str, int], speech_encoder: str, vol_aug: bool,
                        tiny: bool) -> dict[str, Any]:
    """config.json from its template (not modified); raises KeyError for an unknown `speech_encoder`."""
    config = copy.deepcopy(dict(template))
    model = config["model"]
    config["spk"] = dict(spk)
    model["n_speakers"] = max(spk.values(), default=-1) + 1
    model["speech_encoder"] = speech_encoder
    dim = model["ssl_dim"] = model["gin_channels"] = ENCODER_DIMS[speech_encoder]
    if dim >= 768:  # 4.1 keeps the template's filter_channels for the 256-dim encoders
        model["filter_channels"] = dim
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


def _existing_config(path: str, overwrite: bool) -> dict[str, Any] | None:
    """The user's earlier generated config at `path`, or None (absent, or unreadable with `overwrite`)."""
    if not os.path.isfile(path):
        return None
    try:
        return load_config(path).to_dict()
    except ConfigError as err:
        if not overwrite:
            raise DatasetError(f"{err}. Fix it, or run with --overwrite_config to replace it by the template "
                               "(its values are lost then)") from None
        logger.warning(f"Replacing the unreadable {path} by the template: {err}")
        return None


def _speaker_map(existing: Mapping[str, Any] | None, config_path: str) -> dict[str, int] | None:
    """The `spk` map of an earlier config.json when it is a map of distinct ids, else None."""
    spk = (existing or {}).get("spk")
    ids = list(spk.values()) if isinstance(spk, Mapping) else []
    if ids and all(type(i) is int and i >= 0 for i in ids) and len(set(ids)) == len(ids):
        return dict(spk)
    if existing is not None:
        logger.warning(f"Ignoring the speaker ids of {config_path}: spk is not a map of distinct ids")
    return None


def keep_user_values(new: dict[str, Any], old: Mapping[str, Any], forced: set[str], prefix: str = "") -> list[str]:
    """Copy the values of an existing config `old` into the freshly generated `new`, except the dotted keys
    in `forced` (what this step sets); returns each difference as "key=value" (forced ones: "(was old)")."""
    notes: list[str] = []
    for key, value in old.items():
        name = f"{prefix}{key}"
        if name in forced:
            if key in new and new[key] != value and name != "spk":
                notes.append(f"{name}={json.dumps(new[key])} (was {json.dumps(value)}, set by this step)")
        elif isinstance(value, Mapping) and isinstance(new.get(key), dict):
            notes += keep_user_values(new[key], value, forced, name + ".")
        elif key not in new or new[key] != value:
            new[key] = value
            notes.append(f"{name}={json.dumps(value, ensure_ascii=False)}")
    return notes


def _write_config(path: str, config: dict[str, Any], old: Mapping[str, Any] | None, forced: set[str]) -> None:
    """Write a generated config, keeping the user's values of `old` (the file there before) but `forced`."""
    notes = keep_user_values(config, old, forced) if old is not None else []
    if notes:
        logger.warning(f"Kept your values in {path} (--overwrite_config restores the template): "
                       + ", ".join(notes))
    logger.info(f"Writing to {path}")
    write_bytes_atomic(path, dump_config(config, yaml_style=path.endswith(".yaml")).encode("utf-8"))


def preprocess_flist_config(train_list: PathLike = "./filelists/train.txt",
                            val_list: PathLike = "./filelists/val.txt", source_dir: PathLike = "./dataset/44k",
                            speech_encoder: str = "vec768l12", vol_aug: bool = False, tiny: bool = False,
                            seed: int | None = None, config_dir: PathLike = "configs",
                            template_dir: PathLike | None = None, progress: bool = True,
                            overwrite_config: bool = False) -> FlistConfigResult:
    """Write the file lists, `<config_dir>/config.json` and `<config_dir>/diffusion.yaml`.

    vol_aug sets `train.vol_aug` and `model.vol_embedding`; tiny uses `config_tiny_template.json`; seed seeds
    the split shuffles (None: unseeded like 4.1). Existing configs keep their speaker ids and every value this
    step does not set, unless `overwrite_config` (speaker ids are still kept). template_dir: None =
    `configs_template` of the working directory like 4.1, else the one shipped with this package.
    Raises DatasetError (see split_dataset, or an existing config is unreadable), ValueError (unknown encoder).
    """
    if speech_encoder not in ENCODER_DIMS:
        raise ValueError(f"unknown speech encoder {speech_encoder!r}; choose one of {', '.join(ENCODER_DIMS)}")
    shipped = Path(__file__).resolve().parents[1] / "configs_template"
    templates = Path(template_dir or ("configs_template" if os.path.isdir("configs_template") else shipped))
    sovits_template = load_config(templates / ("config_tiny_template.json" if tiny else "config_template.json"))
    diffusion_template = load_config(templates / "diffusion_template.yaml")
    config_path, diffusion_path = (os.path.join(config_dir, name) for name in ("config.json", "diffusion.yaml"))
    old_sovits, old_diffusion = (_existing_config(p, overwrite_config) for p in (config_path, diffusion_path))

    rate = int(sovits_template.data.sampling_rate)
    train, val, speakers, skipped = split_dataset(source_dir, random.Random(seed), rate, progress)
    existing = _speaker_map(old_sovits, config_path)
    spk = assign_speaker_ids(speakers, existing)
    if existing is not None:
        logger.info(f"Keeping the speaker ids of the existing {config_path}: {spk}")

    write_filelist(train_list, train, progress)
    write_filelist(val_list, val, progress)

    os.makedirs(config_dir, exist_ok=True)
    new_encoder = (old_sovits or {}).get("model", {}).get("speech_encoder") != speech_encoder
    forced = {"spk", "model.n_speakers", "model.speech_encoder", "model.ssl_dim",
              *(("model.gin_channels", "model.filter_channels") if new_encoder else ()),
              *(("train.vol_aug", "model.vol_embedding") if vol_aug else ()), *(TINY_KEYS if tiny else ())}
    if overwrite_config:
        old_sovits = old_diffusion = None
    sovits = patch_sovits_config(sovits_template.to_dict(), spk, speech_encoder, vol_aug, tiny)
    _write_config(config_path, sovits, old_sovits, forced)
    diffusion = patch_diffusion_config(diffusion_template.to_dict(), spk, speech_encoder)
    _write_config(diffusion_path, diffusion, old_diffusion,
                  {"spk", "model.n_spk", "data.encoder", "data.encoder_out_channels"})
    return FlistConfigResult(train, val, spk, config_path, diffusion_path, skipped)
