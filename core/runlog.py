"""What a training run reports and how it stops: log handlers for the run, TensorBoard output with 4.1's tag
names and figure renders, and the SIGINT/SIGTERM stop flag.

TensorBoard and matplotlib are imported only when a writer or figure is made; without them training goes on
with one warning and no event files."""
from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["StopFlag", "Summary", "attached_handlers", "plot_data_to_numpy", "plot_spectrogram_to_numpy"]


@contextmanager
def attached_handlers(handlers: Sequence[logging.Handler], level: int = logging.INFO) -> Iterator[None]:
    """Add `handlers` to the root logger (at `level`), then remove and close them (scripts call this inside
    `main`, so importing a module never configures logging)."""
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)


class StopFlag:
    """SIGINT/SIGTERM handlers: the first signal asks the run to stop after its current step (the trainer then
    saves); a second one more than a second later aborts at once with KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at = 0.0
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None and time.monotonic() - self.at > 1.0:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            logger.warning("%s received: stopping after this step and saving a checkpoint "
                           "(repeat to abort at once)", signal.Signals(signum).name)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def exit_code(self) -> int:
        return 128 + self.signum if self.signum is not None else 0


class Summary:
    """One `SummaryWriter` for `folder`; a silent no-op when TensorBoard is not installed."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            logger.warning("TensorBoard logging is off (%s); pip install -r requirements.txt to get it", err)
            return
        os.makedirs(folder, exist_ok=True)
        self.writer = SummaryWriter(log_dir=folder)

    def write(self, step: int, scalars: Mapping[str, float] | None = None,
              images: Mapping[str, np.ndarray | None] | None = None,
              audios: Mapping[str, torch.Tensor] | None = None, audio_sampling_rate: int = 44100) -> None:
        """Scalars, HWC uint8 images and audio ([1, N] or [N] in [-1, 1]) at `step` (4.1's summarize)."""
        if self.writer is None:
            return
        for tag, value in (scalars or {}).items():
            self.writer.add_scalar(tag, value, step)
        for tag, image in (images or {}).items():
            if image is not None:
                self.writer.add_image(tag, image, step, dataformats="HWC")
        for tag, audio in (audios or {}).items():
            samples = audio.detach().float().cpu().reshape(1, -1).clamp(-1.0, 1.0)
            self.writer.add_audio(tag, samples, step, sample_rate=audio_sampling_rate)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _render(draw: Callable[[Any, Any], object]) -> np.ndarray | None:
    """`draw(figure, axes)` on a 10 x 2 in Agg figure (4.1's image size; built without pyplot, so no global
    backend state is touched) -> HWC uint8 RGB image; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(10, 2))
    FigureCanvasAgg(fig)
    draw(fig, fig.add_subplot())
    fig.tight_layout()
    fig.canvas.draw()
    return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])


def plot_spectrogram_to_numpy(spectrogram: np.ndarray) -> np.ndarray | None:
    """[channels, frames] -> HWC uint8 image (lower origin, colour bar); None without matplotlib."""
    def draw(fig: Any, ax: Any) -> None:
        fig.colorbar(ax.imshow(spectrogram, aspect="auto", origin="lower", interpolation="none"), ax=ax)
        ax.set_xlabel("Frames")
        ax.set_ylabel("Channels")
    return _render(draw)


def plot_data_to_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Two curves over frames (e.g. lf0 and pred_lf0) -> HWC uint8 image; None without matplotlib."""
    def draw(_fig: Any, ax: Any) -> None:
        ax.plot(x)
        ax.plot(y)
    return _render(draw)
