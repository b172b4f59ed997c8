"""What evaluate.py shows: the terminal table (units in the headings), the JSON file and the PNG figure."""
from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
import torch

from core.atomic import write_bytes_atomic
from evaluation.conversion import HOP, RATE
from modules.mel_processing import mel_spectrogram_torch

__all__ = ["checkpoint_table", "conversion_table", "plot_conversions", "write_json"]

CENTS_REFERENCE_HZ = 55.0  # 0 cents on the plot's pitch axis (A1)
# (heading with unit, JSON key, formatter)
_CONVERSION_COLUMNS = (("pitch RMSE (cents)", "pitch_rmse_cents", "{:.0f}"),
                       ("off >50 cents (%)", "pitch_over_50_cents", "pct"),
                       ("voicing error (%)", "voicing_error", "pct"),
                       ("sim. target (cos)", "speaker_similarity_target", "{:.3f}"),
                       ("sim. source (cos)", "speaker_similarity_source", "{:.3f}"),
                       ("loudness corr. (r)", "loudness_correlation", "{:.3f}"),
                       ("content sim. (cos)", "content_similarity", "{:.3f}"))
_CHECKPOINT_COLUMNS = (("rank", "rank", "{}"), ("step", "step", "{}"), ("MCD (dB)", "mcd_db", "{:.2f}"),
                       ("log-F0 RMSE (cents)", "lf0_rmse_cents", "{:.0f}"),
                       ("speaker sim. (cos)", "speaker_similarity", "{:.3f}"))


def _cell(value: Any, form: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if form == "pct" else form.format(value)


def _table(rows: list[dict[str, Any]], columns: tuple, first: str) -> str:
    header = [first] + [c[0] for c in columns]
    body = [[os.path.basename(str(r["file"]))] + [_cell(r[key], form) for _, key, form in columns] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _notes(report: dict[str, Any]) -> list[str]:
    return list(report["skipped"].values())


def conversion_table(report: dict[str, Any]) -> str:
    """The conversion report as text: a heading, one row per converted file, skipped figures."""
    head = (f"source {report['source']} -> speaker {report['speaker']}, {report['semitones']:+g} semitones "
            f"(F0: {report['f0_predictor']}; target = {report['speaker_clips']} dataset clips)")
    return "\n".join([head, _table(report["conversions"], _CONVERSION_COLUMNS, "file"), *_notes(report)])


def checkpoint_table(report: dict[str, Any]) -> str:
    """The ranking as text, best first, naming the best checkpoint."""
    head = f"{len(report['checkpoints'])} checkpoint(s) on {report['val']}, ranked by MCD (lower is better)"
    return "\n".join([head, _table(report["checkpoints"], _CHECKPOINT_COLUMNS, "checkpoint"), *_notes(report),
                      f"best: {report['best']}"])


def write_json(report: dict[str, Any], path: str) -> None:
    """The report without its private `_` keys, as indented UTF-8 JSON (atomic)."""
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    write_bytes_atomic(path, (json.dumps(public, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _cents(f0: np.ndarray) -> np.ndarray:
    out = np.full(len(f0), np.nan)
    voiced = f0 > 0
    out[voiced] = 1200.0 * np.log2(f0[voiced] / CENTS_REFERENCE_HZ)
    return out


def plot_conversions(report: dict[str, Any], path: str) -> None:
    """PNG with one panel per conversion: its log-mel spectrogram, and over it the source's F0 (moved by -t)
    and the conversion's F0 on a cents axis; the figures in the panel's title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["conversions"]
    fig = Figure(figsize=(12, 3.2 * len(rows)))
    FigureCanvasAgg(fig)
    for i, (row, curve) in enumerate(zip(rows, report["_curves"])):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        audio = torch.from_numpy(np.clip(curve["audio"], -1, 1))[None]
        mel = mel_spectrogram_torch(audio, 2048, 80, RATE, HOP, 2048, 0.0, RATE / 2)[0].numpy()
        seconds = mel.shape[1] * HOP / RATE
        ax.imshow(mel, aspect="auto", origin="lower", extent=(0, seconds, 0, mel.shape[0]), cmap="magma")
        ax.set_ylabel("mel band")
        ax.set_xlabel("time (s)")
        pitch = ax.twinx()
        for key, style, label in (("f0_source", "w--", "source F0 (shifted)"), ("f0_result", "c-", "converted F0")):
            f0 = curve[key]
            pitch.plot(np.arange(len(f0)) * HOP / RATE, _cents(f0), style, linewidth=1, label=label)
        pitch.set_ylabel(f"F0 (cents above {CENTS_REFERENCE_HZ:g} Hz)")
        pitch.legend(loc="upper right", fontsize=7)
        figures = [f"{heading} {_cell(row[key], form)}" for heading, key, form in _CONVERSION_COLUMNS]
        ax.set_title(f"{os.path.basename(row['file'])}\n" + ", ".join(figures), fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
