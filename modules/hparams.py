"""The one config object: read and write so-vits-svc 4.1 `config.json` / `diffusion.yaml` losslessly.

`HParams` wraps a nested mapping so that fields read as attributes (`hps.train.batch_size`) or items
(`hps["model"]`). Key order and unknown keys are kept, so `save_config(load_config(p), p)` rewrites a
file in 4.1's style byte for byte. Errors name the field and the file they come from.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView

__all__ = [
    "ConfigError",
    "ConfigNotFoundError",
    "dump_config",
    "HParams",
    "SOVITS_FIELDS",
    "get_hparams_from_file",
    "load_config",
    "save_config",
    "validate_sovits_config",
    "write_atomic",
]

PathLike = str | os.PathLike


class ConfigError(ValueError):
    """A config file is unreadable or a field is missing / of the wrong type.

    `path` is the file (may be empty) and `field` the dotted key (e.g. `model.ssl_dim`, may be empty).
    """

    def __init__(self, message: str, path: PathLike | None = None, field: str = "") -> None:
        super().__init__(message)
        self.path = "" if path is None else str(path)
        self.field = field


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (also catchable as FileNotFoundError)."""


class HParams:
    """Nested config with attribute and item access; nested mappings become HParams.

    Args:
        data: the mapping to wrap (copied shallowly; nested dicts are wrapped recursively).
        source: file the values came from, used in error messages.
        prefix: dotted position of this node in the file (`"model"` for `hps.model`).
        missing_as_none: read absent fields as None instead of raising (4.1's inference mode,
            needed for 4.0-era configs that lack newer keys).
    """

    __slots__ = ("_data", "_source", "_prefix", "_missing_as_none")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        source: PathLike | None = None,
        prefix: str = "",
        missing_as_none: bool = False,
    ) -> None:
        object.__setattr__(self, "_data", {})
        object.__setattr__(self, "_source", "" if source is None else str(source))
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_missing_as_none", missing_as_none)
        for key, value in (data or {}).items():
            self[key] = value

    def _wrap(self, key: str, value: Any) -> Any:
        if isinstance(value, HParams):
            value = value.to_dict()
        if isinstance(value, Mapping):
            return HParams(value, self._source, self._dotted(key), self._missing_as_none)
        return value

    def _dotted(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else str(key)

    def _missing(self, key: str) -> str:
        where = f"{self._source} " if self._source else "config "
        names = [str(k) for k in self._data]
        available = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") if names else "none"
        return f"{where}is missing {self._dotted(key)} (available here: {available})"

    # attribute access -------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Dunder lookups (pickle, copy) must not be answered from the data.
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            data = object.__getattribute__(self, "_data")
        except AttributeError:
            raise AttributeError(name) from None
        if name in data:
            return data[name]
        if self._missing_as_none:
            return None
        raise AttributeError(self._missing(name))

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    # mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(self._missing(key)) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = self._wrap(key, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def items(self) -> ItemsView[str, Any]:
        return self._data.items()

    def values(self) -> ValuesView[Any]:
        return self._data.values()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    # conversion -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts in the original key order."""
        return {k: v.to_dict() if isinstance(v, HParams) else v for k, v in self._data.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HParams):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"HParams({self.to_dict()!r})"

    def __getstate__(self) -> tuple:
        return (self.to_dict(), self._source, self._prefix, self._missing_as_none)

    def __setstate__(self, state: tuple) -> None:
        data, source, prefix, missing_as_none = state
        HParams.__init__(self, data, source, prefix, missing_as_none)


# ------------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------------
def _is_yaml(path: PathLike) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def load_config(path: PathLike, missing_as_none: bool = False) -> HParams:
    """Read a `.json` config (or `.yaml`/`.yml` with `yaml.safe_load`) into HParams.

    Raises:
        ConfigNotFoundError: the file does not exist.
        ConfigError: not UTF-8, not parseable, or its top level is not a mapping.
    """
    path_str = str(path)
    if not os.path.isfile(path):
        raise ConfigNotFoundError(f"config file {path_str} not found", path_str)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path_str} is not UTF-8 text (byte {err.start}); save it as UTF-8", path_str
        ) from None
    if _is_yaml(path):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path_str}: invalid YAML: {err}", path_str) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path_str}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}",
                path_str,
            ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path_str}: top level must be a mapping, got {type(data).__name__}", path_str)
    return HParams(data, source=path_str, missing_as_none=missing_as_none)


def get_hparams_from_file(config_path: PathLike, infer_mode: bool = False) -> HParams:
    """4.1 name of `load_config`; `infer_mode=True` reads absent fields as None."""
    return load_config(config_path, missing_as_none=infer_mode)


def dump_config(hps: HParams | Mapping[str, Any], yaml_style: bool = False) -> str:
    """Text of a config in 4.1's style.

    JSON: 2-space indent, non-ASCII as `\\uXXXX`, no trailing newline (what `json.dump(indent=2)`
    writes). YAML: keys sorted, block style, non-ASCII escaped (what `yaml.dump` writes).
    """
    data = hps.to_dict() if isinstance(hps, HParams) else _plain(hps)
    if yaml_style:
        import yaml

        return yaml.safe_dump(data, sort_keys=True, allow_unicode=False, default_flow_style=False)
    return json.dumps(data, indent=2, ensure_ascii=True)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, HParams) else _plain(v) if isinstance(v, Mapping) else v
            for k, v in data.items()}


def save_config(hps: HParams | Mapping[str, Any], path: PathLike) -> None:
    """Write a config atomically; YAML for `.yaml`/`.yml` paths, JSON otherwise (see dump_config)."""
    text = dump_config(hps, yaml_style=_is_yaml(path))
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through a temp file in the same folder, fsync it, then `os.replace` it over `path`.

    A crash or exception inside `write` leaves any previous file untouched and no temp file behind
    (the temp name starts with a dot, so every stage ignores a leftover). The file gets the usual
    umask permissions, not mkstemp's owner-only ones.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable; not possible on every platform (Windows), so best effort.
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------------------------------
# validation of the So-VITS config.json
# ------------------------------------------------------------------------------------------------
# Fields that code reads. "train": needed to train; "all": needed to train and to run inference;
# "opt": optional (absent in 4.0-era configs; the reader has a fallback), type-checked when present.
SOVITS_FIELDS: tuple[tuple[str, str, str], ...] = (
    # field                             kind            needed by
    ("train.log_interval",              "int",          "train"),
    ("train.eval_interval",             "int",          "train"),
    ("train.seed",                      "int",          "train"),
    ("train.epochs",                    "int",          "train"),
    ("train.learning_rate",             "number",       "train"),
    ("train.betas",                     "number_pair",  "train"),
    ("train.eps",                       "number",       "train"),
    ("train.batch_size",                "int",          "train"),
    ("train.fp16_run",                  "bool",         "train"),
    ("train.half_type",                 "str",          "train"),
    ("train.lr_decay",                  "number",       "train"),
    ("train.segment_size",              "int",          "train"),
    ("train.warmup_epochs",             "int",          "train"),
    ("train.c_mel",                     "number",       "train"),
    ("train.c_kl",                      "number",       "train"),
    ("train.port",                      "port",         "train"),
    ("train.keep_ckpts",                "int",          "train"),
    ("train.all_in_mem",                "bool",         "train"),
    ("train.vol_aug",                   "bool",         "opt"),
    ("data.training_files",             "str",          "train"),
    ("data.validation_files",           "str",          "train"),
    ("data.max_wav_value",              "number",       "train"),
    ("data.sampling_rate",              "int",          "all"),
    ("data.filter_length",              "int",          "all"),
    ("data.hop_length",                 "int",          "all"),
    ("data.win_length",                 "int",          "all"),
    ("data.n_mel_channels",             "int",          "train"),
    ("data.mel_fmin",                   "number",       "train"),
    ("data.mel_fmax",                   "number_or_null", "train"),
    ("data.unit_interpolate_mode",      "str",          "opt"),
    ("model.inter_channels",            "int",          "all"),
    ("model.hidden_channels",           "int",          "all"),
    ("model.filter_channels",           "int",          "all"),
    ("model.n_heads",                   "int",          "all"),
    ("model.n_layers",                  "int",          "all"),
    ("model.kernel_size",               "int",          "all"),
    ("model.p_dropout",                 "number",       "all"),
    ("model.resblock",                  "resblock",     "all"),
    ("model.resblock_kernel_sizes",     "int_list",     "all"),
    ("model.resblock_dilation_sizes",   "int_list_list", "all"),
    ("model.upsample_rates",            "int_list",     "all"),
    ("model.upsample_initial_channel",  "int",          "all"),
    ("model.upsample_kernel_sizes",     "int_list",     "all"),
    ("model.gin_channels",              "int",          "all"),
    ("model.ssl_dim",                   "int",          "all"),
    ("model.n_speakers",                "int",          "all"),
    ("model.use_spectral_norm",         "bool",         "train"),
    ("model.n_layers_trans_flow",       "int",          "opt"),
    ("model.n_flow_layer",              "int",          "opt"),
    ("model.vocoder_name",              "str",          "opt"),
    ("model.speech_encoder",            "str",          "opt"),
    ("model.vol_embedding",             "bool",         "opt"),
    ("model.use_depthwise_conv",        "bool",         "opt"),
    ("model.flow_share_parameter",      "bool",         "opt"),
    ("model.use_automatic_f0_prediction", "bool",       "opt"),
    ("model.use_transformer_flow",      "bool",         "opt"),
    ("spk",                             "speaker_map",  "all"),
)

_KIND_TEXT = {
    "int": "an integer",
    "number": "a number",
    "number_or_null": "a number or null",
    "number_pair": "a list of two numbers",
    "bool": "true or false",
    "str": "a string",
    "port": "a port number (string or integer)",
    "resblock": 'the string "1" or "2"',
    "int_list": "a list of integers",
    "int_list_list": "a list of lists of integers",
    "speaker_map": "an object mapping speaker names to integer ids",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind_ok(kind: str, v: Any) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "int": _is_int,
        "number": _is_number,
        "number_or_null": lambda x: x is None or _is_number(x),
        "number_pair": lambda x: isinstance(x, list) and len(x) == 2 and all(map(_is_number, x)),
        "bool": lambda x: isinstance(x, bool),
        "str": lambda x: isinstance(x, str),
        # 4.1 hands the port to the environment as a string; accept an integer too (quirk 62).
        "port": lambda x: (_is_int(x) or (isinstance(x, str) and x.strip().isdigit())),
        "resblock": lambda x: x in ("1", "2"),
        "int_list": lambda x: isinstance(x, list) and all(map(_is_int, x)),
        "int_list_list": lambda x: isinstance(x, list)
        and all(isinstance(r, list) and all(map(_is_int, r)) for r in x),
        "speaker_map": lambda x: isinstance(x, Mapping) and all(map(_is_int, x.values())),
    }
    return checks[kind](v)


def validate_sovits_config(hps: HParams | Mapping[str, Any], path: PathLike = "", for_training: bool = True) -> None:
    """Check the fields of SOVITS_FIELDS (and their consistency) in a So-VITS `config.json`.

    Args:
        hps: the loaded config.
        path: file name used in messages (defaults to the file HParams was loaded from).
        for_training: also require the "train" fields; False checks what inference needs.
    Raises:
        ConfigError: one line per problem, e.g.
            "configs/config.json: model.ssl_dim must be an integer, got '768a'".
    """
    data = hps.to_dict() if isinstance(hps, HParams) else _plain(hps)
    where = str(path) or (hps._source if isinstance(hps, HParams) else "") or "config"
    problems: list[tuple[str, str]] = []

    def lookup(field: str) -> tuple[bool, Any]:
        node: Any = data
        for part in field.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False, None
            node = node[part]
        return True, node

    for field, kind, needed in SOVITS_FIELDS:
        required = needed == "all" or (needed == "train" and for_training)
        section = field.split(".")[0]
        if "." in field and not isinstance(data.get(section), Mapping):
            reported = any(p[0] == section for p in problems)
            if section in data and not reported:
                problems.append((section, f"{section} must be an object, got {data[section]!r}"))
            elif section not in data and required and not reported:
                problems.append((section, f"section {section} is missing"))
            continue
        present, value = lookup(field)
        if not present or (value is None and kind != "number_or_null"):
            if required:
                problems.append((field, f"{field} is missing"))
            continue
        if not _kind_ok(kind, value):
            problems.append((field, f"{field} must be {_KIND_TEXT[kind]}, got {value!r}"))

    if not problems:
        problems = _consistency_problems(data)
    if problems:
        lines = [f"{where}: {text}" for _, text in problems]
        raise ConfigError("\n".join(lines), where, problems[0][0])


def _consistency_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Cross-field rules; only run once every field has the right type."""
    out: list[tuple[str, str]] = []
    model, hop = data["model"], data["data"]["hop_length"]
    product = 1
    for rate in model["upsample_rates"]:
        product *= rate
    if product != hop:
        out.append(("model.upsample_rates",
                    f"model.upsample_rates multiply to {product} but data.hop_length is {hop}"))
    if len(model["upsample_rates"]) != len(model["upsample_kernel_sizes"]):
        out.append(("model.upsample_kernel_sizes",
                    "model.upsample_kernel_sizes must have one entry per model.upsample_rates entry"))
    if len(model["resblock_kernel_sizes"]) != len(model["resblock_dilation_sizes"]):
        out.append(("model.resblock_dilation_sizes",
                    "model.resblock_dilation_sizes must have one entry per model.resblock_kernel_sizes entry"))
    n_speakers = model["n_speakers"]
    for name, sid in data["spk"].items():
        if not 0 <= sid < n_speakers:
            out.append(("spk", f"spk[{name!r}] = {sid} is outside 0..{n_speakers - 1} (model.n_speakers)"))
    return out
