"""Offline text-to-speech with eSpeak NG: the library and its voice data come from the `espeakng-loader` wheel
and are driven here through ctypes (no system package, no network).

    speech, rate = synthesize("Hello there", language="en", voice="f3", words_per_minute=175, pitch=50)
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

__all__ = ["TTSError", "VOICES", "languages", "synthesize"]

DEFAULT_RATE, DEFAULT_PITCH = 175, 50  # eSpeak's own defaults (words per minute, 0-99)
RATE_RANGE, PITCH_RANGE = (80, 450), (0, 99)
# eSpeak voice variants (files in espeak-ng-data/voices/!v): "default" is the language's own voice.
VOICES = {"default": "", "female 1": "f1", "female 2": "f2", "female 3": "f3", "female 4": "f4",
          "male 1": "m1", "male 2": "m2", "male 3": "m3", "male 4": "m4", "whisper": "whisper"}
_SYNCHRONOUS, _CHARS_UTF8, _POS_CHARACTER = 2, 1, 1  # espeak_AUDIO_OUTPUT, synth flags, position type
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TTSError(RuntimeError):
    """Speech cannot be synthesized; the message says why."""


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _Engine:
    """The process's one eSpeak NG instance (the library keeps global state: calls are serialised)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as err:
            raise TTSError(f"text-to-speech needs the espeakng-loader package (pip install espeakng-loader==0.2.4):"
                           f" {err}") from None
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.sample_rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sample_rate <= 0:
            raise TTSError(f"eSpeak NG did not start with its data folder {data}")
        self.blocks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav, n: int, _events) -> int:
        if n > 0:
            self.blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def languages(self) -> list[str]:
        out = set()
        voices = self.lib.espeak_ListVoices(None)
        for i in range(10_000):
            if not voices[i]:
                break
            # languages: repeated (priority byte, NUL-terminated name), ended by a zero priority byte
            address = voices[i].contents.languages
            while ctypes.c_ubyte.from_address(address).value:
                name = ctypes.string_at(address + 1)
                out.add(name.decode())
                address += len(name) + 2
        return sorted(out)

    def synthesize(self, text: str, language: str, variant: str, rate: int, pitch: int) -> np.ndarray:
        name = f"{language}+{variant}" if variant else language
        with self.lock:
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise TTSError(f"eSpeak NG has no language {language!r} (e.g. en, en-us, de, fr, es, ja, cmn)")
            self.lib.espeak_SetParameter(_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self.blocks = []
            data = text.encode()
            if self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise TTSError("eSpeak NG could not synthesize the text")
            self.lib.espeak_Synchronize()
            blocks, self.blocks = self.blocks, []
        return np.concatenate(blocks).astype(np.float32) / 32768 if blocks else np.zeros(0, np.float32)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def languages() -> list[str]:
    """Language codes eSpeak NG speaks (en, en-us, de, cmn, ...)."""
    return _get().languages()


def synthesize(text: str, language: str = "en", voice: str = "default", words_per_minute: int = DEFAULT_RATE,
               pitch: int = DEFAULT_PITCH) -> tuple[np.ndarray, int]:
    """(speech float32 [N] in [-1, 1], its sample rate) of `text`; voice: a key of VOICES. TTSError otherwise."""
    if not text.strip():
        raise TTSError("type some text to speak")
    if voice not in VOICES:
        raise TTSError(f"unknown voice {voice!r}; choose one of {', '.join(VOICES)}")
    if not (RATE_RANGE[0] <= words_per_minute <= RATE_RANGE[1] and PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]):
        raise TTSError(f"rate must be {RATE_RANGE[0]}-{RATE_RANGE[1]} words per minute and pitch "
                       f"{PITCH_RANGE[0]}-{PITCH_RANGE[1]}")
    language = language.strip()
    if not language or os.sep in language or "+" in language:
        raise TTSError(f"eSpeak NG has no language {language!r}")
    engine = _get()
    speech = engine.synthesize(text, language, VOICES[voice], words_per_minute, pitch)
    if speech.size == 0:
        raise TTSError("eSpeak NG produced no sound for this text")
    return speech, engine.sample_rate
