"""Typed config sections: the fields each stage reads from `config.json` / `diffusion.yaml`, in one place.

A section is a frozen dataclass; `read_config` checks a loaded `HParams` against its annotations and returns the
typed view (the `HParams` stays the lossless file object). A field without a default is required; one with
`train_only()` has a default for inference but is required for training; any other default is what 4.1 falls
back to when an older config lacks the key. Every problem becomes one line "<file>: <field> must be <kind>, got
<value>" in one `ConfigError`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Mapping

from core.config import ConfigError, HParams, PathLike, _plain

__all__ = ["DataConfig", "DiffusionConfig", "ModelConfig", "SovitsConfig", "TrainConfig", "model_section",
           "read_config", "sovits_config"]

logger = logging.getLogger(__name__)

Positive = Annotated[float, "positive"]
PositiveInt = Annotated[int, "positive"]
NonEmpty = Annotated[str, "non-empty"]
Port = Annotated[str, "port"]  # 4.1 hands it to the environment as a string; an integer works too
SpeakerMap = dict[str, int]


def train_only(default: Any = None) -> Any:
    """A field training needs but inference does not (it then reads `default`)."""
    return field(default=default, metadata={"train": True})


# So-VITS config.json
@dataclass(frozen=True)
class TrainConfig:
    log_interval: int
    eval_interval: int
    seed: int
    epochs: int
    learning_rate: float
    betas: tuple[float, float]
    eps: float
    batch_size: int
    fp16_run: bool
    half_type: str
    lr_decay: float
    segment_size: int
    warmup_epochs: int
    c_mel: float
    c_kl: float
    port: Port
    keep_ckpts: int
    all_in_mem: bool
    vol_aug: bool = False
    discriminator_width: Positive = 1.0  # fraction of 4.1's discriminator channels; 1.0 is 4.1's model


@dataclass(frozen=True)
class DataConfig:
    sampling_rate: int = train_only(44100)
    filter_length: int = train_only(2048)
    hop_length: int = train_only(512)
    win_length: int = train_only(2048)
    training_files: str = train_only("")
    validation_files: str = train_only("")
    max_wav_value: float = train_only(32768.0)
    n_mel_channels: int = train_only(80)
    mel_fmin: float = train_only(0.0)
    mel_fmax: float | None = train_only(22050)
    # Absent in 4.0-era configs: 4.1 trains them with "nearest" but converts with 4.0's "left", as they expect.
    unit_interpolate_mode: str | None = None

    @property
    def training_unit_mode(self) -> str:
        return self.unit_interpolate_mode or "nearest"

    @property
    def inference_unit_mode(self) -> str:
        return self.unit_interpolate_mode or "left"


@dataclass(frozen=True)
class ModelConfig:
    """The generator's architecture: the arguments of `models.SynthesizerTrn` after the two sizes."""

    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    resblock: Literal["1", "2"]
    resblock_kernel_sizes: list[int]
    resblock_dilation_sizes: list[list[int]]
    upsample_rates: list[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: list[int]
    gin_channels: int
    ssl_dim: int
    n_speakers: int
    sampling_rate: int = 44100  # absent from 4.1's template: its decoder always runs at 44.1 kHz
    vol_embedding: bool = False
    vocoder_name: str = "nsf-hifigan"
    use_depthwise_conv: bool = False
    use_automatic_f0_prediction: bool = True
    flow_share_parameter: bool = False
    n_flow_layer: int = 4
    n_layers_trans_flow: int = 3
    use_transformer_flow: bool = False
    # Not architecture: read by preprocessing, training and inference.
    speech_encoder: str | None = None  # absent in 4.0-era configs; inference then goes by the unit width
    use_spectral_norm: bool = train_only(False)

    def network_args(self) -> dict[str, Any]:
        """Keyword arguments of `SynthesizerTrn` (everything but the non-architecture fields)."""
        args = dataclasses.asdict(self)
        for key in ("speech_encoder", "use_spectral_norm"):
            del args[key]
        return args


@dataclass(frozen=True)
class SovitsConfig:
    """A checked So-VITS config; `train` is None when it was read for inference without one."""

    train: TrainConfig | None
    data: DataConfig
    model: ModelConfig
    spk: SpeakerMap

    @property
    def spec_channels(self) -> int:
        return self.data.filter_length // 2 + 1

    @property
    def segment_frames(self) -> int:
        """Training crop in frames (4.1 builds the generator with it even for inference)."""
        segment = self.train.segment_size if self.train is not None else 10240
        return segment // self.data.hop_length


# Keys 4.1 writes but reads nowhere.
_DEAD_MODEL_KEYS = frozenset({"n_layers_q", "speaker_embedding"})


def _so_vits_rules(cfg: SovitsConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    model, hop = cfg.model, cfg.data.hop_length
    product = math.prod(model.upsample_rates)
    if product != hop:
        out.append(("model.upsample_rates",
                    f"model.upsample_rates multiply to {product} but data.hop_length is {hop}"))
    if len(model.upsample_rates) != len(model.upsample_kernel_sizes):
        out.append(("model.upsample_kernel_sizes",
                    "model.upsample_kernel_sizes must have one entry per model.upsample_rates entry"))
    if len(model.resblock_kernel_sizes) != len(model.resblock_dilation_sizes):
        out.append(("model.resblock_dilation_sizes",
                    "model.resblock_dilation_sizes must have one entry per model.resblock_kernel_sizes entry"))
    for name, sid in cfg.spk.items():
        if not 0 <= sid < model.n_speakers:
            out.append(("spk", f"spk[{name!r}] = {sid} is outside 0..{model.n_speakers - 1} (model.n_speakers)"))
    return out


def sovits_config(hps: HParams | Mapping[str, Any], path: PathLike = "",
                  for_training: bool = False) -> SovitsConfig:
    """Check a So-VITS `config.json` and return its typed sections. `path` names the file in messages (default:
    the file `hps` was loaded from); `for_training` also requires what only training reads (`train` and more).

    Raises:
        ConfigError: one line per problem ("config.json: model.ssl_dim must be an integer, got '768a'").
    """
    cfg = read_config(hps, SovitsConfig, path, for_training, rules=_so_vits_rules)
    unknown = sorted(set(hps["model"]) - {f.name for f in dataclasses.fields(ModelConfig)} - _DEAD_MODEL_KEYS)
    if unknown:
        logger.warning("model config keys not used by SynthesizerTrn: %s", ", ".join(unknown))
    return cfg


@dataclass(frozen=True)
class _ModelOnly:
    model: ModelConfig


def model_section(model: Mapping[str, Any], path: PathLike = "model config") -> ModelConfig:
    """The typed `model` section of a config given alone (e.g. a manifest's model_config)."""
    return read_config({"model": model}, _ModelOnly, path).model


# Shallow diffusion diffusion.yaml (the fields train_diff.py reads)
@dataclass(frozen=True)
class DiffusionData:
    sampling_rate: PositiveInt
    block_size: PositiveInt
    duration: Positive
    encoder_out_channels: PositiveInt
    training_files: NonEmpty
    validation_files: NonEmpty
    unit_interpolate_mode: str | None = None

    @property
    def training_unit_mode(self) -> str:
        return self.unit_interpolate_mode or "nearest"


@dataclass(frozen=True)
class DiffusionModel:
    n_layers: PositiveInt
    n_chans: PositiveInt
    n_hidden: PositiveInt
    use_pitch_aug: bool
    timesteps: PositiveInt
    k_step_max: int
    n_spk: PositiveInt


@dataclass(frozen=True)
class DiffusionVocoder:
    type: Literal["nsf-hifigan", "nsf-hifigan-log10"]
    ckpt: NonEmpty


@dataclass(frozen=True)
class DiffusionInfer:
    speedup: PositiveInt
    method: NonEmpty


@dataclass(frozen=True)
class DiffusionEnv:
    expdir: NonEmpty
    gpu_id: int = 0


@dataclass(frozen=True)
class DiffusionTrain:
    batch_size: PositiveInt
    epochs: int
    interval_log: PositiveInt
    interval_val: PositiveInt
    interval_force_save: PositiveInt
    lr: Positive
    decay_step: PositiveInt
    gamma: Positive
    weight_decay: float
    amp_dtype: Literal["fp32", "fp16", "bf16"]
    cache_all_data: bool = True
    cache_device: str = "cpu"
    cache_fp16: bool = False
    num_workers: int = 0
    save_opt: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    data: DiffusionData
    model: DiffusionModel
    vocoder: DiffusionVocoder
    infer: DiffusionInfer
    env: DiffusionEnv
    train: DiffusionTrain
    device: str = "cpu"
    spk: SpeakerMap | None = None  # None: absent or null (one speaker)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(tp: Any) -> tuple[Callable[[Any], bool], str]:
    """(check, "what it must be") for a field annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        inner, tag = args
        if tag == "port":
            return (lambda v: _is_int(v) or (isinstance(v, str) and v.strip().isdigit()),
                    "a port number (string or integer)")
        check, text = _kind(inner)
        if tag == "non-empty":
            return (lambda v: check(v) and v != ""), "a non-empty string"
        return (lambda v: check(v) and v > 0), f"a positive {text.split()[-1]}"
    if origin in (types.UnionType, typing.Union):
        check, text = _kind(next(a for a in args if a is not type(None)))
        return (lambda v: v is None or check(v)), f"{text} or null"
    if origin is Literal:
        return (lambda v: v in args), "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple:
        return (lambda v: isinstance(v, list) and len(v) == len(args) and all(map(_is_number, v)),
                f"a list of {({2: 'two'}).get(len(args), len(args))} numbers")
    if origin is list:
        inner, text = _kind(args[0])
        plural = "lists of integers" if text.startswith("a list") else "integers"
        return (lambda v: isinstance(v, list) and all(map(inner, v))), f"a list of {plural}"
    if origin is dict:
        return (lambda v: isinstance(v, Mapping) and all(map(_is_int, v.values())),
                "an object mapping speaker names to integer ids")
    simple = {int: (_is_int, "an integer"), float: (_is_number, "a number"),
              bool: (lambda v: isinstance(v, bool), "true or false"),
              str: (lambda v: isinstance(v, str), "a string")}
    return simple[tp]


def read_config(hps: HParams | Mapping[str, Any], cls: type, path: PathLike = "", for_training: bool = True,
                rules: Callable[[Any], list[tuple[str, str]]] | None = None) -> Any:
    """Check `hps` against the sections of dataclass `cls` and build it; see the module docstring.

    A top-level field typed `Section | None` may be absent unless `for_training`; `rules` adds
    cross-field checks, run once every field has the right type.
    """
    data = hps.to_dict() if isinstance(hps, HParams) else _plain(hps)
    where = str(path) or (hps._source if isinstance(hps, HParams) else "") or "config"
    problems: list[tuple[str, str]] = []
    built: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        section_cls = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
        if section_cls is None:  # a top-level value such as `spk`
            top = next(f for f in dataclasses.fields(cls) if f.name == name)
            value = _field(data, name, tp, _required(top), problems)
            if value is not _ABSENT:
                built[name] = value
            continue
        optional = section_cls is not tp and not for_training
        node = data.get(name)
        if node is None and optional:
            built[name] = None
            continue
        if not isinstance(node, Mapping):
            problems.append((name, f"{name} must be an object, got {node!r}" if name in data
                             else f"section {name} is missing"))
            continue
        values, hints, complete = {}, typing.get_type_hints(section_cls, include_extras=True), True
        for f in dataclasses.fields(section_cls):
            required = _required(f) or (for_training and f.metadata.get("train", False))
            value = _field(node, f.name, hints[f.name], required and not optional, problems, prefix=f"{name}.")
            if value is not _ABSENT:
                values[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple else value
            elif required:
                complete = False  # an incomplete optional section (read for inference) counts as absent
        if not any(p[0].startswith(f"{name}.") for p in problems):
            built[name] = section_cls(**values) if complete else None
    if not problems and rules is not None:
        problems = rules(cls(**built))
    if problems:
        raise ConfigError("\n".join(f"{where}: {text}" for _, text in problems), where, problems[0][0])
    return cls(**built)


_ABSENT = object()


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _field(node: Mapping[str, Any], key: str, tp: Any, required: bool, problems: list[tuple[str, str]],
           prefix: str = "") -> Any:
    dotted = prefix + key
    value = node.get(key)
    check, text = _kind(tp)
    if key not in node or (value is None and not check(None)):
        if required:
            problems.append((dotted, f"{dotted} is missing"))
        return _ABSENT
    if not check(value):
        problems.append((dotted, f"{dotted} must be {text}, got {value!r}"))
        return _ABSENT
    return value
