"""Shared pytest fixtures: where the so-vits-svc 4.1 reference fixtures live."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "sovits41"
VENCODER_FIXTURES = SHARED / "fixtures" / "vencoder"
DATA = SHARED / "data"


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
        pytest.skip("../shared/fixtures/sovits41 not available")
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
