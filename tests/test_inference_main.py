"""inference_main.py: the tutorial's conversion command on a tiny real model (see test_infer_tool)."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import inference_main
from conftest import ROOT
from test_infer_tool import SR, build_workspace

MODEL = ["-m", "logs/44k/G_1.pth", "-c", "logs/44k/config.json"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = build_workspace(tmp_path_factory.mktemp("cli"))
    short = sf.read(root / "raw/short.wav", dtype="float32")[0]
    sf.write(root / "raw/a.wav", short[:SR], SR, subtype="PCM_16")
    sf.write(root / "raw/b.wav", short[SR // 2:SR // 2 + SR], SR, subtype="PCM_16")
    sf.write(root / "raw/c.flac", short[:SR], SR, subtype="PCM_16")
    return root


@pytest.fixture
def cli(ws: Path, monkeypatch, caplog):
    monkeypatch.chdir(ws)
    caplog.set_level(logging.INFO)

    def run(*args: str) -> int:
        return inference_main.main(list(args))

    return run


def test_tutorial_command_writes_the_4_1_result(cli, ws: Path) -> None:
    assert cli(*MODEL, "-n", "short.wav", "-t", "0", "-s", "speaker0") == 0
    out = ws / "results/short.wav_0key_speaker0_sovits_pm.flac"
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    assert info.frames == sf.info(ws / "raw/short.wav").frames
    assert np.sqrt(np.mean(sf.read(out)[0] ** 2)) > 0.01
    assert cli(*MODEL, "-n", "short.wav", "-t", "12", "-s", "speaker0") == 0
    up = sf.read(ws / "results/short.wav_12key_speaker0_sovits_pm.flac")[0]
    assert len(up) == info.frames and not np.allclose(up, sf.read(out)[0], atol=1e-2)  # F0 x2: see test_infer_tool


def test_every_input_for_every_speaker(cli, ws: Path) -> None:
    assert cli(*MODEL, "-n", "a.wav", "b", "-t", "3", "-s", "speaker0", "speaker2", "-f0p", "dio", "-wf", "wav") == 0
    for name in ("a.wav", "b"):  # -t 3 repeats for b; the name is kept as typed
        for spk in ("speaker0", "speaker2"):
            out = ws / f"results/{name}_3key_{spk}_sovits_dio.wav"
            info = sf.info(out)
            assert (info.samplerate, info.subtype, info.frames) == (SR, "PCM_16", SR)
    a0 = sf.read(ws / "results/a.wav_3key_speaker0_sovits_dio.wav")[0]
    a2 = sf.read(ws / "results/a.wav_3key_speaker2_sovits_dio.wav")[0]
    assert not np.allclose(a0, a2, atol=1e-3)


def test_option_flags_in_names_and_audio(cli, ws: Path, caplog) -> None:
    assert cli(*MODEL, "-n", "c.flac", "-s", "speaker1", "-a", "-shd", "-eh", "-eak", "2", "-lea", "0",
               "-cl", "0.6", "-lg", "0.1", "-p", "0") == 0
    assert (ws / "raw/c.wav").exists()  # non-wav input converted as 4.1 does
    out = ws / "results/c.flac_auto_speaker1_sovits_pm.flac"
    assert sf.info(out).frames == SR
    # no logs/44k/diffusion/model_0.pt here: So-VITS runs (with the enhancer) and the name says so
    assert "No diffusion model or config found. Shallow diffusion mode will False" in caplog.text
    assert "files are named _sovits_" in caplog.text


def test_speaker_mix_replaces_the_speaker_list(cli, ws: Path) -> None:
    assert cli(*MODEL, "-n", "a.wav", "-s", "speaker0", "speaker1", "-usm") == 0
    mixed = sf.read(ws / "results/a.wav_0key_spk_mix_sovits_pm.flac")[0]
    assert len(mixed) == SR and not (ws / "results/a.wav_0key_speaker1_sovits_pm.flac").exists()


def test_cluster_ratio_uses_the_cluster_file(cli, ws: Path, tmp_path: Path) -> None:
    cluster = pytest.importorskip("cluster")
    if not hasattr(cluster, "get_cluster_model"):
        pytest.skip("cluster.get_cluster_model not available yet")
    import torch

    rng = np.random.default_rng(1)
    model = {name: {"n_features_in_": 48, "_n_threads": 1,
                    "cluster_centers_": rng.standard_normal((8, 48)).astype(np.float32)}
             for name in ("speaker0", "speaker1", "speaker2")}
    path = tmp_path / "kmeans_8.pt"
    torch.save(model, path)
    assert cli(*MODEL, "-n", "a.wav", "-s", "speaker2", "-cr", "0.5", "-cm", str(path)) == 0
    assert (ws / "results/a.wav_0key_speaker2_0.5_sovits_pm.flac").exists()


def test_feature_retrieval_index(cli, ws: Path, tmp_path: Path, caplog) -> None:
    pytest.importorskip("faiss")
    index_mod = pytest.importorskip("cluster.feature_index")
    rows = np.random.default_rng(2).standard_normal((400, 48)).astype(np.float32)
    indexes = {sid: index_mod.train_speaker_index(rows, permutation=np.arange(400)) for sid in range(3)}
    index_mod.save_index_file(indexes, tmp_path / "feature_and_index.pkl")
    assert cli(*MODEL, "-n", "b.wav", "-s", "speaker1", "-cr", "0.25", "-fr",
               "-cm", str(tmp_path / "feature_and_index.pkl")) == 0
    assert (ws / "results/b.wav_0key_speaker1_0.25_sovits_pm.flac").exists()
    assert "starting feature retrieval..." in caplog.text


@pytest.mark.parametrize("args, message", [
    (["-n", "nothere.wav", "-s", "speaker0"], r"raw/nothere.wav not found.*raw/ has: .*short.wav"),
    (["-n", "a.wav", "-s", "nobody"], r"not in the speaker list.*available: speaker0, speaker1, speaker2"),
    (["-n", "a.wav", "-s", "speaker0", "-cr", "0.5"],
     r"cluster ratio 0.5 given but logs/44k/kmeans_10000.pt not found; train it \(python cluster/train_cluster.py\)"),
    (["-n", "a.wav", "-s", "speaker0", "-cr", "0.5", "-fr"],
     r"logs/44k/feature_and_index.pkl not found; train it \(python train_index.py"),
])
def test_user_errors_exit_1_with_a_message(cli, capsys, args: list[str], message: str) -> None:
    assert cli(*MODEL, *args) == 1
    assert __import__("re").search(message, capsys.readouterr().err)


def test_missing_encoder_and_mismatched_config(cli, ws: Path, capsys, tmp_path: Path) -> None:
    moved = tmp_path / "cv.pt"
    shutil.move(ws / "pretrain/checkpoint_best_legacy_500.pt", moved)
    try:
        assert cli(*MODEL, "-n", "a.wav", "-s", "speaker0") == 1
    finally:
        shutil.move(moved, ws / "pretrain/checkpoint_best_legacy_500.pt")
    assert "pretrain/checkpoint_best_legacy_500.pt is missing" in capsys.readouterr().err
    config = (ws / "logs/44k/config.json").read_text().replace('"ssl_dim": 48', '"ssl_dim": 256')
    (tmp_path / "config.json").write_text(config)
    assert cli("-m", "logs/44k/G_1.pth", "-c", str(tmp_path / "config.json"), "-n", "a.wav", "-s", "speaker0") == 1
    assert "takes 48-dim units but" in capsys.readouterr().err


def test_argument_errors_exit_2(cli, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        cli(*MODEL, "-n", "a.wav", "-t", "1.5")  # -t takes integers, as in 4.1
    assert err.value.code == 2
    assert cli(*MODEL, "-n", "a.wav", "-f0p", "yin") == 2
    assert "unknown F0 predictor 'yin'" in capsys.readouterr().err
    assert cli(*MODEL, "-n", "a.wav", "-d", "gpu") == 2
    assert "unknown device 'gpu'; use cpu, cuda or cuda:N" in capsys.readouterr().err
    assert cli(*MODEL, "-n", "a.wav", "-d", "cuda:99") == 2
    assert "device cuda:99 cannot be used: " in capsys.readouterr().err


def test_defaults_and_long_names() -> None:
    args = inference_main.build_parser().parse_args([])
    assert (args.model_path, args.config_path, args.clean_names, args.trans, args.spk_list) == (
        "logs/44k/G_37600.pth", "logs/44k/config.json", ["君の知らない物語-src.wav"], [0], ["buyizi"])
    assert (args.slice_db, args.noice_scale, args.pad_seconds, args.wav_format, args.f0_predictor) == (
        -40, 0.4, 0.5, "flac", "pm")
    assert (args.linear_gradient_retain, args.f0_filter_threshold, args.k_step, args.device) == (0.75, 0.05, 100, None)
    assert (args.cluster_infer_ratio, args.loudness_envelope_adjustment, args.enhancer_adaptive_key) == (0, 1, 0)
    long = inference_main.build_parser().parse_args(
        ["--clean_names", "x", "--trans", "2", "--spk_list", "s", "--auto_predict_f0", "--use_spk_mix", "--enhance",
         "--feature_retrieval", "--shallow_diffusion", "--only_diffusion", "--second_encoding", "--clip", "3",
         "--linear_gradient", "1", "--cluster_model_path", "k.pt", "--diffusion_model_path", "d.pt",
         "--diffusion_config_path", "d.yaml", "--device", "cpu", "--wav_format", "wav"])
    assert long.trans == [2] and long.use_spk_mix and long.only_diffusion and long.clip == 3.0


def test_command_line_reaches_the_conversion_options() -> None:
    from inference.options import InferOptions

    args = inference_main.build_parser().parse_args(
        ["-cl", "3", "-lg", "1", "-lgr", "0.5", "-ft", "0.1", "-sd", "-30", "-ks", "40", "-se", "-lea", "0.5",
         "-eak", "2", "-ns", "0.3", "-p", "0.2", "-f0p", "dio", "-a", "-cr", "0.4", "-usm"])
    assert InferOptions.from_args(args, 5) == InferOptions(
        tran=5, clip_seconds=3, lg_num=1, lgr_num=0.5, cr_threshold=0.1, slice_db=-30, k_step=40, second_encoding=True,
        loudness_envelope_adjustment=0.5, enhancer_adaptive_key=2, noice_scale=0.3, pad_seconds=0.2,
        f0_predictor="dio", auto_predict_f0=True, cluster_infer_ratio=0.4, use_spk_mix=True)


def test_help_states_the_limits_the_options_enforce(capsys) -> None:
    from inference.options import MAX_TRANSPOSE, MIN_CLIP_FRAMES

    with pytest.raises(SystemExit):
        inference_main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(-{MAX_TRANSPOSE}..{MAX_TRANSPOSE})" in text and f"at least {MIN_CLIP_FRAMES} model frames" in text


def test_the_command_module_imports_without_torch() -> None:
    """inference_main.py --help and the web page's start do not wait for torch."""
    code = "import sys, inference_main, inference.command; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
