"""Validation of a So-VITS `config.json`: every field the code reads, its type, and cross-field rules."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from core.config import ConfigError, HParams, PathLike, _plain

__all__ = ["SOVITS_FIELDS", "validate_sovits_config"]

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
