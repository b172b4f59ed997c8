"""4.1's `utils` module, as a thin compatibility face: the helpers 4.1 scripts and notebooks import
from `utils`, re-exported from where they live now. New code imports from `core/` and `modules/`."""
__all__ = ["CheckpointError", "ConfigError", "F0_BIN", "F0_MAX", "F0_MEL_MAX", "F0_MEL_MIN", "F0_MIN", "HParams",
           "Volume_Extractor", "clean_checkpoints", "f0_to_coarse", "get_hparams_from_file", "interpolate_f0",
           "latest_checkpoint_path", "load_checkpoint", "load_config", "mix_model", "normalize_f0",
           "repeat_expand_2d", "safe_torch_load", "save_checkpoint", "save_config"]

from core.checkpoint import (CheckpointError, clean_checkpoints, latest_checkpoint_path, load_checkpoint,
                             safe_torch_load, save_checkpoint)
from core.config import ConfigError, HParams, get_hparams_from_file, load_config, save_config
from export.mix import mix_model
from modules.f0 import (F0_BIN, F0_MAX, F0_MEL_MAX, F0_MEL_MIN, F0_MIN, f0_to_coarse, interpolate_f0,
                        normalize_f0, repeat_expand_2d)
from modules.mel_processing import VolumeExtractor as Volume_Extractor
