"""A full disk while the clustering and retrieval tools write their model files: a message, exit 1, no
partial file."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conftest import ROOT, PreparedProject


@pytest.fixture()
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.atomic

    real = core.atomic.os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(core.atomic.os, "fsync", fsync)


@pytest.mark.parametrize("tool", ["cluster/train_cluster.py", "train_index.py"])
def test_full_disk_is_named(tool: str, prepared_project: PreparedProject, tmp_path: Path, full_disk, capsys,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    project = prepared_project.root
    monkeypatch.chdir(project)
    spec = importlib.util.spec_from_file_location("tool_under_test", ROOT / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--n_clusters", "2", "--seed", "0", "--output", str(tmp_path)] if "cluster" in tool \
        else ["--output_dir", str(tmp_path)]
    assert module.main(args) == 1
    err = capsys.readouterr().err
    assert f"the disk of {tmp_path} is full" in err and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


def test_full_disk_while_compressing_or_mixing(tmp_path: Path, full_disk, capsys) -> None:
    import compress_model
    import model_mix
    from conftest import FIXTURES

    base = FIXTURES / "synth" / "base_vec768"
    if not (base / "G_800.pth").exists():
        pytest.skip("synth fixture not available")
    out = tmp_path / "out"
    out.mkdir()
    assert compress_model.main(["-c", str(base / "config.json"), "-i", str(base / "G_800.pth"),
                                "-o", str(out / "release.pth")]) == 2
    assert model_mix.main(["-i", str(base / "G_800.pth"), str(base / "G_800.pth"), "-o", str(out / "mix.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count(f"the disk of {out} is full") == 2 and "Traceback" not in err, err
    assert os.listdir(out) == []
