"""Shared pytest fixtures: where the so-vits-svc 4.1 reference fixtures live, and a tutorial-prepared project.

The reference folders are `../shared` next to the checkout, or the folder named by `SOVITS_SHARED`.
Without them fixture tests skip; under `CI=true` the run stops at once instead, naming what is missing.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("SOVITS_SHARED") or ROOT.parent / "shared").resolve()
FIXTURES = SHARED / "fixtures" / "sovits41"
VENCODER_FIXTURES = SHARED / "fixtures" / "vencoder"
DATA = SHARED / "data"
# Tests in these files build full-size networks in the named fixtures: `-m "not slow"` leaves them out.
SLOW_FIXTURES = {"test_f0_rmvpe.py": {"workdir"}, "test_f0_crepe.py": {"predictor"}}


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI a missing reference folder fails the run: skipping ~40 files would pass silently."""
    missing = [str(p) for p in (FIXTURES, VENCODER_FIXTURES, DATA) if not p.is_dir()]
    if missing and _on_ci():
        pytest.exit(f"CI: reference folder(s) missing: {', '.join(missing)} (set SOVITS_SHARED to the folder "
                    "holding fixtures/ and data/)", returncode=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.get(item.path.name, set()) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def load_fixture(sub: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (fixture.json, arrays of fixture.npz) of a fixture folder, or skip when absent."""
    folder = FIXTURES / sub
    if not (folder / "fixture.npz").exists():
        pytest.skip(f"fixture {folder} not available")
    meta = json.loads((folder / "fixture.json").read_text())
    with np.load(folder / "fixture.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.skip(f"{FIXTURES} not available")
    return FIXTURES


@contextlib.contextmanager
def zeroed_rng() -> Iterator[list[tuple[str, list[int]]]]:
    """Make torch.rand/randn(_like) return zeros; yields the list of (kind, shape) draws replaced."""
    calls: list[tuple[str, list[int]]] = []
    saved = torch.rand, torch.randn, torch.rand_like, torch.randn_like

    def make(kind: str):
        def zeros(*size, generator=None, dtype=None, device=None, **_):
            if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
                size = tuple(size[0])
            calls.append((kind, [int(s) for s in size]))
            return torch.zeros(size, dtype=dtype or torch.get_default_dtype(), device=device)
        return zeros

    def make_like(kind: str):
        def zeros_like(t, **_):
            calls.append((kind, list(t.shape)))
            return torch.zeros_like(t)
        return zeros_like

    torch.rand, torch.randn = make("rand"), make("randn")  # type: ignore[assignment]
    torch.rand_like, torch.randn_like = make_like("rand"), make_like("randn")  # type: ignore[assignment]
    try:
        yield calls
    finally:
        torch.rand, torch.randn, torch.rand_like, torch.randn_like = saved  # type: ignore[assignment]


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module's tiny models on one thread: a second OpenMP thread only waits on 2 busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def assert_close_f32(actual: torch.Tensor, ref: np.ndarray, tol: float = 1e-4) -> None:
    """Same shape, float32, and max |actual - ref| <= tol (the vencoder README's criterion)."""
    a = actual.detach().cpu().numpy()
    assert a.shape == ref.shape and a.dtype == np.float32
    assert np.abs(a - ref).max() <= tol


def f0_case_names(prefix: str) -> list[str]:
    """Names of the f0/ fixture cases whose predictor name starts with ``prefix`` (none if absent)."""
    path = FIXTURES / "f0" / "f0_cases.json"
    if not path.exists():
        return []
    return [name for name in json.loads(path.read_text())["cases"] if name.startswith(prefix)]


# Clips of the shared prepared project: speaker folder -> (source folder under DATA, file names).
PROJECT_CLIPS = {"kal": ("voices/kal", ("kal_01.wav", "kal_02.wav", "kal_03.wav")),
                 "slt": ("voices/slt", ("slt_01.wav", "slt_02.wav", "slt_03.wav", "slt_04.wav")),
                 "lj": ("edge", ("stereo48k_slt.wav", "こんにちは_テスト.wav"))}
# (script, arguments, exit code): resample.py exits 1 because it skips the corrupt clip.
PROJECT_STEPS = (("resample", ["--num_processes", "1"], 1),
                 ("preprocess_flist_config", ["--speech_encoder", "vec768l12", "--vol_aug", "--seed", "1"], 0),
                 ("preprocess_hubert_f0", ["--f0_predictor", "dio", "--use_diff", "--device", "cpu"], 0))


@dataclass(frozen=True)
class PreparedProject:
    """A project after the tutorial's three preparation steps; `logs`: step name -> its console output."""

    root: Path
    logs: dict[str, str]

    def copy_to(self, target: Path) -> Path:
        """A private copy (file times kept, so features stay up to date) for tests that change files."""
        shutil.copytree(self.root, target)
        return target


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory: pytest.TempPathFactory) -> PreparedProject:
    """resample -> preprocess_flist_config -> preprocess_hubert_f0 (dio, tiny ContentVec with 48-dim units,
    --vol_aug, --use_diff), run in process once per session. A corrupt kal/corrupt.wav is among the clips.

    Shared: never change it; use `copy_to` first.
    """
    import importlib

    encoder = VENCODER_FIXTURES / "contentvec_reduced.pt"
    vocoder = FIXTURES / "nsf_hifigan" / "model_dir"
    for needed in (encoder, vocoder, *(DATA / sub / name for sub, names in PROJECT_CLIPS.values() for name in names)):
        if not needed.exists():
            pytest.skip(f"{needed} not available")
    root = tmp_path_factory.mktemp("prepared")
    for speaker, (sub, names) in PROJECT_CLIPS.items():
        (root / "dataset_raw" / speaker).mkdir(parents=True)
        for name in names:
            shutil.copy(DATA / sub / name, root / "dataset_raw" / speaker / name)
    (root / "dataset_raw" / "kal" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (root / "pretrain" / "nsf_hifigan").mkdir(parents=True)
    shutil.copy(encoder, root / "pretrain" / "checkpoint_best_legacy_500.pt")
    for name in ("config.json", "model"):
        shutil.copy(vocoder / name, root / "pretrain" / "nsf_hifigan" / name)
    logs = {}
    with contextlib.chdir(root):
        for script, args, expected in PROJECT_STEPS:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = importlib.import_module(script).main(args)
            assert code == expected, f"{script} exited {code}:\n{out.getvalue()}"
            logs[script] = out.getvalue()
    return PreparedProject(root, logs)


@pytest.fixture(scope="module")
def registry_encoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Path], Any]:
    """Factory: `registry_encoder(name, source)` builds speech encoder `name` on the CPU through
    `vencoder.get_speech_encoder`, from a fresh pretrain folder whose file links to fixture `source`."""
    from vencoder import encoder_file, get_speech_encoder

    def build(name: str, source: Path) -> Any:
        folder = tmp_path_factory.mktemp("pretrain")
        (folder / encoder_file(name)).symlink_to(source)
        return get_speech_encoder(name, device="cpu", pretrain_dir=folder)

    return build
