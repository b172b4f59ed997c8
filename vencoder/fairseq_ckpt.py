"""Read fairseq training checkpoints without fairseq or omegaconf installed, executing nothing.

A fairseq checkpoint pickles more than tensors: a `Dictionary` under `task_state` and, depending on
the fairseq version, its config as an `argparse.Namespace` (`args`), a dict or an omegaconf
`DictConfig` (`cfg`). `RestrictedUnpickler` resolves a fixed allow-list (containers, torch's tensor
rebuilders, NumPy data), turns those config / vocabulary classes into inert stand-ins and refuses every
other global before anything runs; `to_plain` turns the stand-ins back into dicts and lists.
"""
from __future__ import annotations

import os
import pickle
import types
import typing
from collections import OrderedDict, defaultdict
from typing import Any, BinaryIO, ClassVar

import torch

from core.checkpoint import CheckpointError, UnsafeCheckpointError, is_zip
from core.pickle_guard import NUMPY_GLOBALS, GuardedUnpickler

__all__ = ["RestrictedUnpickler", "StandIn", "load_fairseq_checkpoint", "restricted_pickle_module", "to_plain"]

PathLike = str | os.PathLike


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    # Protocol 0/1 pickles build plain objects through copyreg._reconstructor, which may call
    # `base.__init__`; only allow the no-op case (a stand-in built on `object`).
    if not (isinstance(cls, type) and issubclass(cls, StandIn)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refused copyreg._reconstructor({cls!r}, {base!r}, ...)")
    return cls.__new__(cls)


_TORCH_AND_BUILTINS: dict[tuple[str, str], Any] = {
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, int, float, complex,
                                             str, bytes, bytearray, bool, slice)},
    ("builtins", "long"): int,  # Python-2 names (very old torch files)
    ("builtins", "unicode"): str,
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("typing", "Any"): typing.Any,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    **{("torch", name): getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64",
                                                          "int8", "int16", "int32", "int64", "uint8", "bool")},
}

# Classes whose objects are configuration / vocabulary data: replaced by stand-ins, never imported.
_STAND_IN_NAMES = {
    "argparse.Namespace",
    "fairseq.data.dictionary.Dictionary",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
}
# omegaconf value nodes (AnyNode, StringNode, ...) and fairseq's config enums live in these modules.
_STAND_IN_MODULES = ("omegaconf.nodes", "fairseq.dataclass")


class StandIn:
    """Inert replacement for a pickled class: keeps constructor arguments and state, runs nothing."""

    _dotted: str = "?"

    def __init__(self, *args: Any) -> None:  # REDUCE calls cls(*args); an Enum member passes its value
        self._args = args

    def __setstate__(self, state: Any) -> None:
        # Objects with __slots__ pickle their state as (dict_state, slot_state).
        if isinstance(state, tuple) and len(state) == 2:
            parts = [s for s in state if isinstance(s, dict)]
        else:
            parts = [state] if isinstance(state, dict) else []
        for part in parts:
            self.__dict__.update(part)
        if not parts and state is not None:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<stand-in {self._dotted} {sorted(self.__dict__)}>"


_stand_in_cache: dict[str, type] = {}


def _stand_in(dotted: str) -> type:
    if dotted not in _stand_in_cache:
        _stand_in_cache[dotted] = type(dotted.rsplit(".", 1)[-1], (StandIn,), {"_dotted": dotted})
    return _stand_in_cache[dotted]


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, dotted: str) -> None:
        super().__init__(dotted)
        self.dotted = dotted


class RestrictedUnpickler(GuardedUnpickler):
    """GuardedUnpickler for fairseq checkpoints: tensors, containers, NumPy data and config stand-ins.

    Args:
        file: binary file positioned at the pickle.
        encoding: how Python-2 strings are decoded (torch.load passes "utf-8").
    torch.load installs its storage loader as `persistent_load`; without one, persistent ids are refused.
    """

    allowed: ClassVar[dict[tuple[str, str], Any]] = {**NUMPY_GLOBALS, **_TORCH_AND_BUILTINS}

    def refuse(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        if dotted in _STAND_IN_NAMES or module.startswith(_STAND_IN_MODULES):
            return _stand_in(dotted)
        raise _RefusedGlobal(dotted)


def _load(file: BinaryIO, encoding: str = "ASCII") -> Any:
    return RestrictedUnpickler(file, encoding=encoding).load()


# What `torch.load(pickle_module=...)` needs: a module with an `Unpickler` class and a `load` function.
restricted_pickle_module = types.ModuleType("restricted_pickle", "pickle limited to fairseq checkpoints")
restricted_pickle_module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle_module.load = _load  # type: ignore[attr-defined]


def to_plain(obj: Any) -> Any:
    """Turn stand-ins back into data: DictConfig/ListConfig -> dict/list, value nodes and enum members ->
    their value, Namespace / other stand-ins -> dict of attributes; containers are converted recursively."""
    if isinstance(obj, StandIn):
        state = obj.__dict__
        if "_content" in state:  # omegaconf containers (None / "???" / interpolation strings stay as is)
            return to_plain(state["_content"])
        if "_val" in state:  # omegaconf value nodes
            return to_plain(state["_val"])
        if set(state) == {"_args"} and len(state["_args"]) == 1:  # an Enum member pickled as cls(value)
            return to_plain(state["_args"][0])
        return {k: to_plain(v) for k, v in state.items() if k != "_metadata"}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


def load_fairseq_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read a fairseq checkpoint on CPU through `RestrictedUnpickler`.

    Returns the top-level dict with `cfg` and `args` converted to plain dicts (or None) by `to_plain`;
    `model` stays the state dict of tensors. Zip files are memory-mapped so the (large) optimizer state
    of a training checkpoint is never read into memory.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list (nothing was executed).
        CheckpointError: not a readable torch file, or not a dict.
    """
    name = os.fspath(path)
    try:
        # weights_only=False only hands unpickling to RestrictedUnpickler, which refuses every global
        # outside its allow-list before anything is called.
        ckpt = torch.load(name, map_location="cpu", weights_only=False, mmap=is_zip(name),
                          pickle_module=restricted_pickle_module)
    except _RefusedGlobal as err:
        raise UnsafeCheckpointError(
            f"{name}: refused to load; its pickle names {err.dotted}, which is not among the objects a "
            "fairseq checkpoint needs. Nothing from the file was executed."
        ) from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"{name} is not a readable torch checkpoint ({type(err).__name__}: "
                              f"{str(err)[:200]})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name} holds a {type(ckpt).__name__}, not a checkpoint dict")
    for key in ("cfg", "args"):
        if key in ckpt:
            ckpt[key] = to_plain(ckpt[key])
    return ckpt

