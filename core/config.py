"""The one config object: read and write `config.json` / `diffusion.yaml` losslessly.

`HParams` wraps a nested mapping so that fields read as attributes (`hps.train.batch_size`) or items
(`hps["model"]`). Key order and unknown keys are kept, so `save_config(load_config(p), p)` rewrites a
file in 4.1's style byte for byte. Errors name the field and the file they come from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ItemsView, Iterator, KeysView, Mapping, ValuesView

from core.atomic import write_bytes_atomic

__all__ = ["ConfigError", "ConfigNotFoundError", "HParams", "dump_config", "get_hparams_from_file",
           "load_config", "save_config"]

PathLike = str | os.PathLike


class ConfigError(ValueError):
    """A config file is unreadable or a field is missing or mistyped; `path` is the file and `field` the
    dotted key (e.g. `model.ssl_dim`), either may be empty."""

    def __init__(self, message: str, path: PathLike | None = None, field: str = "") -> None:
        super().__init__(message)
        self.path = "" if path is None else str(path)
        self.field = field


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (also catchable as FileNotFoundError)."""


class HParams:
    """Nested config with attribute and item access; nested mappings become HParams.

    `source` (the file) and `prefix` (this node's dotted position, `"model"` for `hps.model`) name absent fields
    in errors; `missing_as_none` reads them as None instead (4.1's inference mode, for 4.0-era configs).
    """

    __slots__ = ("_data", "_source", "_prefix", "_missing_as_none")

    def __init__(self, data: Mapping[str, Any] | None = None, source: PathLike | None = None, prefix: str = "",
                 missing_as_none: bool = False) -> None:
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
        raise ConfigError(f"{path_str} is not UTF-8 text (byte {err.start}); save it as UTF-8", path_str) from None
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
            raise ConfigError(f"{path_str}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}",
                              path_str) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path_str}: top level must be a mapping, got {type(data).__name__}", path_str)
    return HParams(data, source=path_str, missing_as_none=missing_as_none)


def get_hparams_from_file(config_path: PathLike, infer_mode: bool = False) -> HParams:
    """4.1 name of `load_config`; `infer_mode=True` reads absent fields as None."""
    return load_config(config_path, missing_as_none=infer_mode)


def dump_config(hps: HParams | Mapping[str, Any], yaml_style: bool = False) -> str:
    """Text of a config as 4.1 writes it: JSON with 2-space indent, `\\uXXXX` escapes and no trailing
    newline (`json.dump(indent=2)`); YAML with sorted keys in block style (`yaml.dump`)."""
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
    write_bytes_atomic(path, text.encode("utf-8"))
