"""Dataset clips and their per-clip feature files: names, file lists, format checks, I/O and validation.

Next to every `X.wav` of `dataset/44k/<speaker>/` preprocessing writes `X.wav` + FEATURE_SUFFIXES[kind] and
`X.spec.pt`. `.f0.npy` is a plain float64 (2, T) array, which 4.1 unpacks like its own pickled pair; both forms
are read, object arrays through a guarded unpickler so a crafted file cannot run code.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import soundfile as sf
import torch

from core.atomic import write_atomic
from core.checkpoint import CheckpointError, UnsafeCheckpointError, safe_torch_load
from core.pickle_guard import GuardedUnpickler

PathLike = str | os.PathLike

__all__ = ["DatasetError", "FEATURE_SUFFIXES", "FeatureError", "clip_problem", "feature_path", "feature_problem",
           "list_speakers", "load_f0", "load_npy", "read_feature", "read_filelist", "save_f0", "save_npy",
           "save_object_npy", "spec_path", "speaker_of"]

# Suffix appended to `X.wav` for each per-clip feature (the spectrogram is named by `spec_path`).
FEATURE_SUFFIXES = {"units": ".soft.pt", "f0": ".f0.npy", "volume": ".vol.npy", "mel": ".mel.npy",
                    "aug_mel": ".aug_mel.npy", "aug_vol": ".aug_vol.npy"}


class DatasetError(ValueError):
    """The file lists, the config and the files on disk do not fit together (message says how to fix)."""


class FeatureError(DatasetError):
    """A feature file is missing, unreadable or not of the shape its clip implies (message names it)."""


def feature_path(wav: str | os.PathLike, kind: str) -> str:
    """`X.wav` -> its feature file of `kind` (a key of FEATURE_SUFFIXES, or "spec")."""
    wav = os.fspath(wav)
    return spec_path(wav) if kind == "spec" else wav + FEATURE_SUFFIXES[kind]


def spec_path(wav_path: str | os.PathLike) -> str:
    """`X.wav` -> `X.spec.pt`: only the final `.wav` is replaced, as 4.1 names it."""
    wav = os.fspath(wav_path)
    return (wav[: -len(".wav")] if wav.endswith(".wav") else wav) + ".spec.pt"


def read_filelist(path: str | os.PathLike) -> list[str]:
    """Clip paths of a file list: field 0 of each `|`-separated line, blank lines ignored (UTF-8).
    Raises DatasetError when the list is missing, not UTF-8, or names no clip."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise DatasetError(f"file list {name} not found; run python preprocess_flist_config.py first")
    try:
        with open(name, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{name} is not UTF-8 (written by an older tool?); re-run "
                           "python preprocess_flist_config.py") from None
    paths = [line.strip().split("|")[0] for line in lines if line.strip()]
    if not paths:
        raise DatasetError(f"{name} lists no clips. Put clips in dataset_raw/<speaker>/, run resample.py "
                           "and preprocess_flist_config.py again (a speaker needs at least 3 clips: "
                           "the first 2 go to the validation list).")
    return paths


def clip_problem(path: PathLike, sampling_rate: int) -> tuple[str, float]:
    """("", seconds) for a clip that training reads correctly (a mono 16-bit PCM WAV at `sampling_rate`),
    else (what is wrong with it, naming the file, 0.0)."""
    name = os.fspath(path)
    try:
        info = sf.info(name)
    except (sf.LibsndfileError, RuntimeError) as err:
        return f"{name} is not a readable WAV file ({err}); run python resample.py", 0.0
    pcm16 = info.format in ("WAV", "WAVEX") and info.subtype == "PCM_16"
    problems = ([] if pcm16 else [f"{info.format} {info.subtype_info}"]) + (
        [f"{info.channels} channels"] if info.channels != 1 else []) + (
        [f"{info.samplerate} Hz"] if info.samplerate != sampling_rate else [])
    if problems:
        return (f"{name} is {', '.join(problems)}; so-vits-svc expects {sampling_rate} Hz mono 16-bit PCM: run "
                "python resample.py"), 0.0
    return "", info.frames / float(info.samplerate)


def speaker_of(path: str) -> str:
    """Speaker of a list entry: its parent folder name (either slash style)."""
    parts = path.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def list_speakers(dataset: str | os.PathLike) -> list[str]:
    """Speaker folders of a dataset: non-hidden sub-directories (`.ipynb_checkpoints` is no speaker), sorted
    by name; DatasetError when the folder is missing."""
    if not os.path.isdir(dataset):
        raise DatasetError(f"dataset folder {os.fspath(dataset)} not found: run python resample.py first")
    return sorted(name for name in os.listdir(dataset)
                  if not name.startswith(".") and os.path.isdir(os.path.join(dataset, name)))


class _NpyUnpickler(GuardedUnpickler):
    def refuse(self, module: str, name: str) -> Any:
        raise UnsafeCheckpointError(f"{self.source} needs {module}.{name} to load, which a feature file never "
                                    "does; refused without running it")


def load_npy(path: PathLike) -> np.ndarray:
    """Read a .npy file; object arrays go through the restricted unpickler."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        _shape, _fortran, dtype = read_header(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        try:
            array = _NpyUnpickler(f, name).load()
        except (EOFError, pickle.UnpicklingError) as err:
            raise ValueError(f"{name} is truncated or corrupt ({err or type(err).__name__})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} does not hold an array")
    return array


def load_f0(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``X.wav.f0.npy`` -> (f0 [T] float64 Hz, uv [T] float64), from our plain or 4.1's object form."""
    data = load_npy(path)
    if len(data) != 2:
        raise ValueError(f"{os.fspath(path)} should hold (f0, uv); found {len(data)} rows")
    f0, uv = (np.asarray(row, dtype=np.float64) for row in data)
    if f0.shape != uv.shape or f0.ndim != 1:
        raise ValueError(f"{os.fspath(path)}: f0 {f0.shape} and uv {uv.shape} should be equal 1-D rows")
    return f0, uv


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomic ``np.save`` of a plain (non-object) array."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError("save_npy writes plain arrays only; use save_object_npy")
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_f0(path: PathLike, f0: np.ndarray, uv: np.ndarray) -> None:
    """Write (f0, uv) as a plain float64 (2, T) array that 4.1 reads unchanged."""
    save_npy(path, np.stack([np.asarray(f0, dtype=np.float64), np.asarray(uv, dtype=np.float64)]))


def save_object_npy(path: PathLike, items: list[Any]) -> None:
    """Write a 1-D object array (4.1's ``aug_mel`` layout) readable by NumPy 1.x and 2.x."""
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    # Protocol 2 spells globals as plain "c<module>\n<name>\n" text, so the NumPy 2 module path can
    # be renamed to the one both major versions import.
    payload = pickle.dumps(array, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")

    def write(f: Any) -> None:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(payload)

    write_atomic(path, write)


UNITS_PER_SECOND = 50.0  # every speech encoder gives about 50 unit frames per second
MAX_FRAME_GAP = 3  # frames by which a feature may differ from its clip's samples // hop (4.1's tolerance)


def _load(path: str, kind: str) -> Any:
    """A feature file in the form read_feature returns; ValueError for a layout no preprocessing writes."""
    if kind in ("units", "spec"):
        data = safe_torch_load(path)
        data = data[0] if isinstance(data, torch.Tensor) and data.dim() == 3 and len(data) == 1 else data
        if not isinstance(data, torch.Tensor) or data.dim() != 2:
            raise ValueError(f"should hold a [1, C, T] or [C, T] tensor, not {getattr(data, 'shape', type(data))}")
        return data.float()
    if kind == "f0":
        return load_f0(path)
    data = load_npy(path)
    if kind == "aug_mel":
        if data.dtype != object or len(data) != 2:
            raise ValueError("should be an object array [mel, keyshift]")
        return np.asarray(data[0], dtype=np.float32), float(data[1])
    data = np.asarray(data, dtype=np.float32)
    if kind != "mel" and data.ndim != 1 and not (data.ndim == 2 and 1 in data.shape):
        raise ValueError(f"should be a [T] array, found shape {data.shape}")
    return data if kind == "mel" else data.reshape(-1)


def read_feature(wav: PathLike, kind: str, samples: int | None = None, hop_length: int = 512,
                 sampling_rate: int = 44100, channels: int | None = None) -> Any:
    """Read the `kind` feature file of clip `wav` (see FEATURE_SUFFIXES) and check it against the clip.

    samples: the clip's length at `sampling_rate` (None: frames not checked); frame counts must be within
    2 of samples // hop_length (units: about 50 per second). channels: unit width, spec or mel bins.
    Returns units [C, Tu] / spec [F, T] float tensors, (f0, uv) [T] float64, volume [T] / mel [T, M] float32
    arrays, or (aug mel [T, M], keyshift). Raises FeatureError naming the file and the problem.
    """
    path = feature_path(wav, kind)
    if not os.path.isfile(path):
        raise FeatureError(f"{path} is missing")
    try:
        data = _load(path, kind)
    except (OSError, ValueError, TypeError, IndexError, CheckpointError) as err:
        raise FeatureError(f"{path} is unreadable ({err})") from None
    array = data[0] if kind in ("f0", "aug_mel") else data
    if kind == "f0" and not np.isfinite(array).all():
        raise FeatureError(f"{path} contains NaN or infinite values")
    if kind in ("mel", "aug_mel") and array.ndim != 2:
        raise FeatureError(f"{path} should be a [T, M] mel, found shape {array.shape}")
    matrix = kind in ("units", "spec")
    width = array.shape[0] if matrix else array.shape[-1]
    if channels is not None and kind in ("units", "spec", "mel", "aug_mel") and width != channels:
        raise FeatureError(f"{path} has {width} channels where {channels} are expected (made by another "
                           "encoder or config?)")
    if samples is not None:
        frames = array.shape[-1 if matrix else 0]
        if kind == "units":
            expected = samples / sampling_rate * UNITS_PER_SECOND
            fits = 0.5 * expected - 2 <= frames <= 1.5 * expected + 2
        else:
            expected = samples // hop_length
            fits = abs(frames - expected) < MAX_FRAME_GAP
        if not fits:
            raise FeatureError(f"{path} has {frames} frames where its {samples / sampling_rate:.2f} s clip gives "
                               f"{expected:.0f} (stale file of another clip?)")
    return data


def feature_problem(wav: PathLike, kind: str, samples: int | None = None, hop_length: int = 512,
                    sampling_rate: int = 44100, channels: int | None = None) -> str:
    """Why the `kind` feature file of `wav` must be (re)computed: "" when it is up to date (read_feature
    accepts it and it is not older than the clip), "missing", or the problem naming the file."""
    path = feature_path(wav, kind)
    if not os.path.isfile(path):
        return "missing"
    if os.path.getmtime(path) < os.path.getmtime(wav):
        return f"{path} is older than its clip"
    try:
        read_feature(wav, kind, samples, hop_length, sampling_rate, channels)
    except FeatureError as err:
        return str(err)
    return ""
