"""Shared pytest fixtures: where the so-vits-svc 4.1 reference fixtures live."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

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
