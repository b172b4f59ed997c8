"""preprocess_flist_config.py / prep/flist_config.py: file lists, config.json, diffusion.yaml.

config.json is checked against ../shared/fixtures/sovits41/manifests/preprocess_flist_config_effects.json
(keys 4.1 changes in the template for every encoder, alone and with --vol_aug / --tiny, for a dataset
of one speaker folder `spk0`): the changed keys must be exactly those, with exactly those values.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import preprocess_flist_config as flist_script
import resample as resample_script
from conftest import DATA, FIXTURES, ROOT
from prep.flist_config import ENCODER_DIMS, assign_speaker_ids, risky_characters

EFFECTS = json.loads((FIXTURES / "manifests/preprocess_flist_config_effects.json").read_text())["effects"]
TEMPLATES = ROOT / "configs_template"
CHINESE = "中文歌手"


def flatten(d: dict, prefix: str = "") -> dict:
    """{"model.ssl_dim": 768, ...}; `spk` stays one value like in the fixture."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "spk":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def write_clip(path: Path, seconds: float, sr: int = 44100, subtype: str = "PCM_16", channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.sin(np.arange(int(sr * seconds)) / 5.0)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, subtype=subtype)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder as the tutorial has it: templates copied in, cwd set to it."""
    shutil.copytree(TEMPLATES, tmp_path / "configs_template")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_dataset(root: Path) -> dict[str, list[str]]:
    """dataset/44k with speakers in non-sorted creation order and every kind of entry to skip.

    Returns the usable clip names per speaker.
    """
    ds = root / "dataset/44k"
    usable = {
        "slt": [f"slt_0{i}.wav" for i in range(1, 5)],
        "kal": ["kal_01.wav", "kal-with hyphen.wav", "こんにちは_テスト.wav"],
        "lj": ["lj_01.wav", "lj_02.wav"],
        CHINESE: ["a.wav", "b.wav", "c.wav"],
    }
    for spk in ("slt", "kal", CHINESE, "lj"):  # creation order is not sorted order
        (ds / spk).mkdir(parents=True)
    for name in usable["slt"]:
        shutil.copy(DATA / "voices/slt" / name, ds / "slt" / name)
    shutil.copy(DATA / "voices/kal/kal_01.wav", ds / "kal/kal_01.wav")
    shutil.copy(DATA / "voices/kal/kal_02.wav", ds / "kal/kal-with hyphen.wav")
    shutil.copy(DATA / "edge/こんにちは_テスト.wav", ds / "kal")
    for name in usable["lj"]:
        shutil.copy(DATA / "voices/lj" / name, ds / "lj" / name)
    for name in usable[CHINESE]:
        write_clip(ds / CHINESE / name, 0.5)
    write_clip(ds / "slt/short.wav", 0.29)  # < 0.3 s: dropped
    write_clip(ds / "slt/.hidden.wav", 1.0)
    write_clip(ds / ".ipynb_checkpoints/x.wav", 1.0)  # hidden folder: not a speaker
    (ds / ".DS_Store").write_bytes(b"\0\1")  # non-directory entries (quirk 52)
    (ds / "notes.txt").write_text("x")
    (ds / "slt/slt_01.wav.soft.pt").write_bytes(b"")  # feature files are not clips
    (ds / "slt/sub.wav").mkdir()  # a folder named like a clip
    return usable


def read_list(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    assert b"\r" not in raw
    return raw.decode("utf-8").splitlines()


def test_filelists_split_and_format(project, caplog):
    usable = make_dataset(project)
    caplog.set_level(logging.INFO, logger="prep.flist_config")
    assert flist_script.main([]) == 0
    train, val = read_list(project / "filelists/train.txt"), read_list(project / "filelists/val.txt")
    by_speaker: dict[str, tuple[list, list]] = {s: ([], []) for s in usable}
    for which, lines in ((0, train), (1, val)):
        for line in lines:
            prefix, spk, name = line.rsplit("/", 2)
            assert prefix == "./dataset/44k"
            by_speaker[spk][which].append(name)
    for spk, names in usable.items():
        got_train, got_val = by_speaker[spk]
        assert len(got_val) == min(2, len(names)), spk
        assert len(got_train) == len(names) - len(got_val), spk
        assert sorted(got_train + got_val) == sorted(names), spk
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("Detected non-ASCII file name: ./dataset/44k/kal/こんにちは_テスト.wav") for m in warnings)
    assert not any("hyphen" in m for m in warnings)  # '-' and ' ' are harmless (section E)
    assert "speaker lj has 2 clips; all went to validation" in warnings
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "Skip too short audio: ./dataset/44k/slt/short.wav" in infos
    for text in ("Writing ./filelists/train.txt", "Writing ./filelists/val.txt",
                 "Writing to configs/config.json", "Writing to configs/diffusion.yaml"):
        assert text in infos


def test_speaker_map_sorted_and_escaped(project):
    make_dataset(project)
    assert flist_script.main(["--speech_encoder", "vec256l9"]) == 0
    raw = (project / "configs/config.json").read_bytes()
    raw.decode("ascii")  # non-ASCII written as \uXXXX escapes
    assert b'"\\u4e2d\\u6587\\u6b4c\\u624b": 3' in raw
    config = json.loads(raw)
    expected = {"kal": 0, "lj": 1, "slt": 2, CHINESE: 3}  # sorted, hidden/non-folders skipped
    assert config["spk"] == expected and list(config["spk"]) == list(expected)
    assert config["model"]["n_speakers"] == 4
    assert list(config) == list(json.loads((TEMPLATES / "config_template.json").read_text()))
    assert raw.startswith(b'{\n  "train": {\n    "log_interval": 200,')  # 2-space indent, template order
    ytext = (project / "configs/diffusion.yaml").read_bytes()
    ytext.decode("ascii")
    diffusion = yaml.safe_load(ytext)
    assert diffusion["spk"] == expected and diffusion["model"]["n_spk"] == 4
    top = [ln.split(":")[0] for ln in ytext.decode().splitlines() if ln and not ln[0].isspace()]
    assert top == sorted(top)


@pytest.mark.parametrize("case", sorted(EFFECTS))
def test_config_effects_match_41(case, project):
    """Every 4.1 case of the fixture: exactly the recorded keys change, to the recorded values."""
    write_clip(project / "dataset/44k/spk0/a.wav", 0.5)
    effect = EFFECTS[case]
    assert flist_script.main(case.split()) == 0
    template = json.loads((project / effect["template"]).read_text())
    config = json.loads((project / "configs/config.json").read_text())
    before, after = flatten(template), flatten(config)
    assert list(after) == list(before)  # same keys, same order
    changed = {k: v for k, v in after.items() if before[k] != v}
    assert changed == effect["changed_keys"]
    for key, value in effect["changed_keys"].items():
        assert type(after[key]) is type(value), key
    # diffusion.yaml: encoder, its width, speaker count and map; everything else as in the template.
    encoder = case.split()[1]
    d_template = yaml.safe_load((TEMPLATES / "diffusion_template.yaml").read_text())
    diffusion = yaml.safe_load((project / "configs/diffusion.yaml").read_text())
    d_changed = {k: v for k, v in flatten(diffusion).items() if flatten(d_template)[k] != v}
    expected = {"model.n_spk": 1, "spk": {"spk0": 0}, "data.encoder_out_channels": after["model.ssl_dim"],
                "data.encoder": encoder}
    assert d_changed == {k: v for k, v in expected.items() if flatten(d_template)[k] != v}
    assert set(flatten(diffusion)) == set(flatten(d_template))


@pytest.mark.parametrize("encoder", [e for e in ENCODER_DIMS if e.endswith("-onnx")])
def test_onnx_encoders_get_their_dimensions(encoder, project):
    """Quirk 61: 4.1 leaves 768 for the 256-dim ONNX encoders; we use the dimension table."""
    write_clip(project / "dataset/44k/spk0/a.wav", 0.5)
    assert flist_script.main(["--speech_encoder", encoder, "--tiny"]) == 0
    model = json.loads((project / "configs/config.json").read_text())["model"]
    dim = {"vec256l9-onnx": 256, "vec256l12-onnx": 256, "hubertsoft-onnx": 256,
           "vec768l9-onnx": 768, "vec768l12-onnx": 768}[encoder]
    assert (model["ssl_dim"], model["gin_channels"], model["filter_channels"]) == (dim, dim, 512)
    assert model["speech_encoder"] == encoder
    diffusion = yaml.safe_load((project / "configs/diffusion.yaml").read_text())
    assert diffusion["data"]["encoder_out_channels"] == dim and diffusion["data"]["encoder"] == encoder


def test_seed_makes_the_split_reproducible(project):
    for i in range(12):
        write_clip(project / f"dataset/44k/s/{i:02d}.wav", 0.4)
    lists = []
    for seed in ("7", "7", "8"):
        assert flist_script.main(["--seed", seed, "--train_list", "t.txt", "--val_list", "v.txt"]) == 0
        lists.append((read_list(project / "t.txt"), read_list(project / "v.txt")))
    assert lists[0] == lists[1]
    assert lists[0] != lists[2]
    assert len(lists[0][0]) == 10 and len(lists[0][1]) == 2


def test_existing_speaker_ids_are_kept(project):
    for spk in ("alto", "bass", "tenor"):
        write_clip(project / f"dataset/44k/{spk}/a.wav", 0.5)
    Path("configs").mkdir()
    Path("configs/config.json").write_text(json.dumps({"spk": {"tenor": 0, "alto": 1, "gone": 2}}))
    assert flist_script.main([]) == 0
    config = json.loads(Path("configs/config.json").read_text())
    assert config["spk"] == {"tenor": 0, "alto": 1, "bass": 2}  # new speakers follow the kept ids
    assert config["model"]["n_speakers"] == 3
    assert assign_speaker_ids(["b", "a"]) == {"a": 0, "b": 1}


def test_bad_clips_stop_with_a_clear_message(project, capsys, caplog):
    write_clip(project / "dataset/44k/s/ok.wav", 0.5)
    write_clip(project / "dataset/44k/s/float.wav", 0.5, subtype="FLOAT")
    write_clip(project / "dataset/44k/s/stereo.wav", 0.5, channels=2)
    write_clip(project / "dataset/44k/s/rate.wav", 0.5, sr=48000)
    (project / "dataset/44k/s/broken.wav").write_bytes(b"RIFFxxxx")
    assert flist_script.main([]) == 1
    err = capsys.readouterr().err
    assert "4 clip(s) in ./dataset/44k cannot be used for training" in err and "resample.py" in err
    assert "./dataset/44k/s/float.wav is WAV 32 bit float" in err
    assert "./dataset/44k/s/stereo.wav is 2 channels" in err
    assert "./dataset/44k/s/rate.wav is 48000 Hz" in err
    assert "./dataset/44k/s/broken.wav is not a readable WAV file" in err
    assert "Reading ./dataset/44k/s/float.wav" in [r.getMessage() for r in caplog.records]
    assert not Path("configs/config.json").exists()


def test_missing_dataset_and_bad_arguments(project, capsys):
    assert flist_script.main(["--source_dir", "nowhere"]) == 1
    assert "dataset folder nowhere not found" in capsys.readouterr().err
    Path("dataset/44k").mkdir(parents=True)
    assert flist_script.main([]) == 1
    assert "no speaker folders" in capsys.readouterr().err
    for argv in (["--speech_encoder", "vec768"], ["--bogus"]):
        with pytest.raises(SystemExit) as exc:
            flist_script.main(argv)
        assert exc.value.code == 2


def test_pipe_in_a_name_is_skipped(project, caplog, capsys):
    write_clip(project / "dataset/44k/s/a.wav", 0.5)
    write_clip(project / "dataset/44k/s/b|c.wav", 0.5)
    assert flist_script.main([]) == 1  # the lists are written, but a clip is left out
    assert "1 skipped (not in the file lists): ./dataset/44k/s/b|c.wav" in capsys.readouterr().err
    assert read_list(project / "filelists/val.txt") == ["./dataset/44k/s/a.wav"]
    assert any("b|c.wav" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert risky_characters("ä-b c|") == ["ä"]


def test_resample_then_flist_on_shared_clips(project):
    """The tutorial's steps 1 and 2 back to back, with the default relative paths."""
    for spk in ("slt", "lj"):
        for i in (1, 2, 3):
            shutil.copy(DATA / f"voices/{spk}/{spk}_0{i}.wav", Path("dataset_raw", spk).mkdir(parents=True, exist_ok=True)
                        or Path("dataset_raw", spk, f"{spk}_0{i}.wav"))
    shutil.copy(DATA / "edge/stereo48k_slt.wav", "dataset_raw/slt/")
    assert resample_script.main(["--num_processes", "1"]) == 0
    assert flist_script.main(["--speech_encoder", "hubertsoft", "--vol_aug", "--seed", "0"]) == 0
    train, val = read_list(Path("filelists/train.txt")), read_list(Path("filelists/val.txt"))
    assert len(train) == 3 and len(val) == 4
    assert sorted(train + val) == sorted(f"./dataset/44k/{p.parent.name}/{p.name}"
                                         for p in Path("dataset/44k").glob("*/*.wav"))
    config = json.loads(Path("configs/config.json").read_text())
    assert config["spk"] == {"lj": 0, "slt": 1}
    assert (config["model"]["ssl_dim"], config["model"]["vol_embedding"], config["train"]["vol_aug"]) == (256, True, True)
