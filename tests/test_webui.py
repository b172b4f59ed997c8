"""webUI.py as users meet it: a server subprocess on a free localhost port, spoken to through the page's own API
(gradio's client) and driven by a real headless Chromium. The model is test_infer_tool's tiny one, laid out
as trained/tiny/; conversions must give the very samples inference_main.py writes with the same options."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

import inference_main
from conftest import ROOT, _on_ci
from test_infer_diffusion import _build_diffusion
from test_infer_tool import SR, build_workspace

pytestmark = pytest.mark.slow
gradio_client = pytest.importorskip("gradio_client")
AppError = gradio_client.exceptions.AppError
CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD_LIMIT_MB = 3
LOCAL = "trained/ folder"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny workspace with trained/tiny/ and trained/group/other/ (same model) and an incomplete folder."""
    root = build_workspace(tmp_path_factory.mktemp("webui"))
    for folder in ("trained/tiny", "trained/group/other"):
        (root / folder).mkdir(parents=True)
        for name in ("G_1.pth", "config.json"):
            shutil.copy(root / "logs/44k" / name, root / folder / name)
    (root / "trained/incomplete").mkdir()
    shutil.copy(root / "logs/44k/config.json", root / "trained/incomplete/config.json")
    _build_diffusion(root)  # logs/44k/diffusion/model_0.pt + config.yaml
    diff = root / "trained/diff"
    shutil.copytree(root / "trained/tiny", diff)
    for name in ("model_0.pt", "config.yaml"):
        shutil.copy(root / "logs/44k/diffusion" / name, diff / name)
    (diff / "model_extra.pt").write_bytes(b"")  # not a step: never taken for the diffusion model
    centres = np.random.default_rng(1).standard_normal((8, 48)).astype(np.float32)
    torch.save({name: {"n_features_in_": 48, "_n_threads": 1, "cluster_centers_": centres}
                for name in ("speaker0", "speaker1", "speaker2")}, diff / "kmeans_10000.pt")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(root: Path, *flags: str) -> Iterator[str]:
    """`python webUI.py --port <free>` in `root`; yields its address once it says it is serving."""
    port = free_port()
    log = root / f"server-{port}.log"
    (root / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GRADIO_TEMP_DIR=str(root / "gradio-tmp"),
               TMPDIR=str(root / "tmp"))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "webUI.py"), "--port", str(port), *flags], cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while f"serving http://127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, f"webUI.py did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    with serve(project, "--max_upload_mb", str(UPLOAD_LIMIT_MB)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str, tmp_path_factory):
    return gradio_client.Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def load(client, folder: str = "tiny") -> str:
    return client.predict(LOCAL, folder, None, None, None, None, None, "cpu", False, False, False,
                          api_name="/load_model")[0]


def convert(client, audio: Path, speaker: str = "speaker0", **options) -> Path:
    options.setdefault("spk_mix_file", None)
    result, download = client.predict(audio=gradio_client.handle_file(str(audio)), speaker=speaker,
                                      api_name="/convert", **options)
    assert Path(result).name == Path(download).name
    return Path(download)


def test_f0_predictors_without_weights_say_which_file(tmp_path: Path, monkeypatch) -> None:
    from webui.state import f0_availability

    monkeypatch.chdir(tmp_path)
    available, missing = f0_availability()
    assert "rmvpe" not in available and "pretrain/rmvpe.pt" in missing["rmvpe"]
    assert {"pm", "dio", "harvest"} <= set(available) and set(available).isdisjoint(missing)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain/rmvpe.pt").write_bytes(b"")
    assert "rmvpe" in f0_availability()[0]


def test_out_of_memory_becomes_advice_on_the_page(project: Path, monkeypatch, single_thread) -> None:
    import gradio as gr

    from webui.page import _messages
    from webui.state import ModelFiles, ModelSlot

    monkeypatch.chdir(project)
    slot = ModelSlot()
    slot.load(ModelFiles("trained/tiny/G_1.pth", "trained/tiny/config.json"), "cpu")

    def exhausted(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(slot.svc, "_convert", exhausted)
    with pytest.raises(gr.Error, match=r"Out of memory on a 3\.0 s slice — use -cl 30 \(forced slicing\)"):
        _messages(slot.convert)(project / "raw/short.wav", "short.wav", "speaker0", 0, {})
    assert not (project / "results/short.wav_0key_speaker0_sovits_pm.flac.part").exists()


def test_share_is_refused(capsys) -> None:
    import webUI

    assert webUI.main(["--share"]) == 2
    assert "--share is refused" in capsys.readouterr().err


def test_lists_trained_folders_and_loads_one(client) -> None:
    with pytest.raises(AppError, match="Load a model first"):
        convert(client, ROOT / "spkmix.py")  # any file: the missing model is said first
    assert client.predict(api_name="/refresh_models")["choices"] == [[name] * 2 for name in ("diff", "group/other",
                                                                                           "tiny")]
    status = load(client)
    assert status.startswith("Loaded on cpu (sovits): model trained/tiny/G_1.pth, config trained/tiny/config.json")
    assert status.endswith("Speakers: speaker0, speaker1, speaker2")


# (page options, the inference_main.py flags that say the same)
OPTION_SETS = [
    ({}, []),
    ({"speaker": "speaker1", "tran": 5, "f0_predictor": "dio", "slice_db": -30, "clip": 0.6, "linear_gradient": 0.1,
      "linear_gradient_retain": 0.5, "pad_seconds": 0.3, "loudness_envelope_adjustment": 0.5, "noice_scale": 0.2,
      "wav_format": "wav"},
     ["-s", "speaker1", "-t", "5", "-f0p", "dio", "-sd", "-30", "-cl", "0.6", "-lg", "0.1", "-lgr", "0.5", "-p", "0.3",
      "-lea", "0.5", "-ns", "0.2", "-wf", "wav"]),
    ({"auto_predict_f0": True, "spk_mix_file": str(ROOT / "spkmix.py"), "wav_format": "ogg"},
     ["-a", "-usm", "-wf", "ogg"]),
]


@pytest.mark.parametrize("page, flags", OPTION_SETS, ids=["defaults", "options", "auto-f0-speaker-mix"])
def test_page_gives_the_samples_of_inference_main(client, project: Path, monkeypatch, single_thread, page: dict,
                                                  flags: list[str]) -> None:
    load(client)
    if page.get("spk_mix_file"):
        page = dict(page, spk_mix_file=gradio_client.handle_file(page["spk_mix_file"]))
    web = convert(client, project / "raw/short.wav", **page)
    web_audio, rate = sf.read(web, dtype="int16")
    monkeypatch.chdir(project)
    cli = ["-m", "trained/tiny/G_1.pth", "-c", "trained/tiny/config.json", "-n", "short.wav", "-d", "cpu"]
    assert inference_main.main(cli + (flags if "-s" in flags else ["-s", "speaker0"] + flags)) == 0
    written = project / "results" / web.name  # the page's file name is the command line's
    cli_audio, cli_rate = sf.read(written, dtype="int16")
    assert rate == cli_rate == SR and len(web_audio) == sf.info(project / "raw/short.wav").frames
    assert np.array_equal(web_audio, cli_audio)


def test_shallow_diffusion_and_clustering_from_a_trained_folder(client, project: Path, monkeypatch,
                                                                single_thread) -> None:
    status = client.predict(LOCAL, "diff", None, None, None, None, None, "cpu", False, True, False,
                            api_name="/load_model")[0]
    assert status.startswith("Loaded on cpu (sovdiff): model trained/diff/G_1.pth, config trained/diff/config.json, "
                             "diffusion trained/diff/model_0.pt + trained/diff/config.yaml, cluster model "
                             "trained/diff/kmeans_10000.pt")
    web = convert(client, project / "raw/short.wav", k_step=5, cluster_infer_ratio=0.5)
    assert web.name == "short.wav_0key_speaker0_0.5_sovdiff_pm.flac"
    web_audio = sf.read(web, dtype="int16")[0]
    monkeypatch.chdir(project)
    assert inference_main.main(["-m", "trained/diff/G_1.pth", "-c", "trained/diff/config.json", "-n", "short.wav",
                                "-s", "speaker0", "-d", "cpu", "-shd", "-dm", "trained/diff/model_0.pt", "-dc",
                                "trained/diff/config.yaml", "-ks", "5", "-cr", "0.5", "-cm",
                                "trained/diff/kmeans_10000.pt"]) == 0
    assert np.array_equal(web_audio, sf.read(project / "results" / web.name, dtype="int16")[0])


def test_text_to_speech_is_spoken_offline_and_converted(client) -> None:
    from webui.tts import languages, synthesize

    assert {"en", "en-us", "de", "fr", "cmn", "ja"} <= set(languages())
    load(client)
    text = "one two three four five six seven eight nine ten"
    lengths = {}
    for language in ("en", "de"):
        result = client.predict(text=text, language=language, voice="female 2", rate=175, pitch=50,
                                speaker="speaker2", spk_mix_file=None, wav_format="wav", api_name="/text_to_speech")[1]
        assert Path(result).name == "tts_0key_speaker2_sovits_pm.wav"
        speech, rate = synthesize(text, language, "female 2", 175, 50)
        lengths[language] = sf.info(result).frames
        assert lengths[language] == -(-len(speech) * SR // rate)  # resampled to 44.1 kHz, converted whole
        assert 10 / 175 * 60 * 0.5 < lengths[language] / SR < 10 / 175 * 60 * 1.5  # ten words at 175 per minute
    assert lengths["en"] != lengths["de"]  # German pronunciation of the same words
    fast = synthesize(text, "en", "default", 350)[0]
    assert 0.35 < len(fast) / len(synthesize(text, "en", "default", 175)[0]) < 0.65


def test_stop_cancels_a_long_conversion(client, project: Path) -> None:
    load(client)
    long = project / "long.wav"
    sf.write(long, np.tile(sf.read(project / "raw/short.wav", dtype="float32")[0], 10), SR, subtype="PCM_16")
    job = client.submit(audio=gradio_client.handle_file(str(long)), speaker="speaker0", clip=0.3,
                        spk_mix_file=None, api_name="/convert")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.predict(api_name="/stop")
    with pytest.raises(AppError, match="Conversion stopped; nothing was written"):
        job.result(timeout=60)
    assert not list((project / "results").glob("long.wav_*"))  # neither the file nor its .part
    assert not list((project / "tmp").iterdir())  # the page's temporary copies are gone


def test_tools_write_files_that_load(client, project: Path) -> None:
    from core.checkpoint import read_checkpoint
    from core.config import load_config
    from generator import load_generator

    model, config = project / "trained/tiny/G_1.pth", project / "trained/tiny/config.json"
    handle = gradio_client.handle_file
    mixed = client.predict([handle(str(model)), handle(str(project / "trained/group/other/G_1.pth"))], "30, 70",
                           "convex", handle(str(config)), api_name="/mix_models")
    assert Path(mixed).name == "output.pth" and (project / "output.pth").is_file()
    original = read_checkpoint(model)["model"]
    for key, value in read_checkpoint(mixed)["model"].items():  # a mix of one model with itself is that model
        torch.testing.assert_close(value, original[key], rtol=1e-6, atol=1e-6)
    release = client.predict(handle(str(model)), handle(str(config)), True, api_name="/compress_model")
    assert Path(release).name == "G_1_release_half.pth" and (project / "G_1_release_half.pth").is_file()
    load_generator(release, load_config(config), config)  # loads, and fits the config
    assert read_checkpoint(release)["model"]["emb_g.weight"].dtype == torch.float16
    assert os.path.getsize(release) < os.path.getsize(model) / 2


def _upload_load(client, model: Path, config: Path) -> str:
    handle = gradio_client.handle_file
    return client.predict("upload", None, handle(str(model)), handle(str(config)), None, None, None, "cpu", False,
                          False, False, api_name="/load_model")[0]


def test_errors_arrive_as_messages_and_a_failed_load_keeps_the_model(client, project: Path, tmp_path: Path) -> None:
    load(client)
    short = project / "raw/short.wav"
    config = json.loads((project / "trained/tiny/config.json").read_text())
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(dict(config, model=dict(config["model"], ssl_dim=256))))
    soft = tmp_path / "soft.json"
    soft.write_text(json.dumps(dict(config, model=dict(config["model"], speech_encoder="hubertsoft"))))
    unsafe = tmp_path / "G_evil.pth"
    torch.save({"model": {}, "payload": os.system}, unsafe)  # unpickling it would import os.system
    code = tmp_path / "spkmix.py"
    code.write_text(f"import os\nspk_mix_map = os.system('touch {tmp_path / 'ran'}')\n")
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros((UPLOAD_LIMIT_MB + 1) * 2**20 // 2, np.int16), SR)
    model = project / "trained/tiny/G_1.pth"
    shutil.copytree(project / "trained/tiny", project / "trained/gone")
    assert ["gone"] * 2 in client.predict(api_name="/refresh_models")["choices"]
    (project / "trained/gone/G_1.pth").unlink()  # listed, then emptied before Load
    for attempt, message in [
        (lambda: _upload_load(client, model, wide), r"ssl_dim|256"),
        (lambda: _upload_load(client, model, soft), r"pretrain/hubert-soft-0d54a1f4\.pt is missing"),
        (lambda: _upload_load(client, unsafe, project / "trained/tiny/config.json"),
         r"G_evil\.pth: refused to load; unpickling it would import .*system"),
        (lambda: load(client, "gone"), r"trained/gone no longer holds one \.pth and one \.json; Refresh"),
        (lambda: convert(client, short, speaker="nobody"), r"not in the speaker list.*speaker0, speaker1, speaker2"),
        (lambda: convert(client, short, cluster_infer_ratio=0.5), r"cluster ratio 0\.5 given but .* not found"),
        (lambda: convert(client, short, tran=60), r"transposition \(-t\) must be between -53 and 53"),
        (lambda: convert(client, short, clip=0.01), r"forced slices \(-cl\) must be 0 or at least 0\.046 s"),
        (lambda: convert(client, short, spk_mix_file=gradio_client.handle_file(str(code))), r"plain numbers"),
        (lambda: client.predict(text="hello", language="xx", voice="default", rate=175, pitch=50,
                                speaker="speaker0", spk_mix_file=None, api_name="/text_to_speech"),
         r"eSpeak NG has no language 'xx'"),
    ]:
        with pytest.raises(AppError, match=message):
            attempt()
    with pytest.raises(Exception, match=r"(?i)file.*(size|large)"):
        convert(client, big)
    assert not (tmp_path / "ran").exists()  # the uploaded mix file was read, never run
    assert convert(client, short).name == "short.wav_0key_speaker0_sovits_pm.flac"  # tiny is still loaded
    assert _upload_load(client, model, project / "trained/tiny/config.json").startswith("Loaded on cpu (sovits)")
    assert client.predict(api_name="/unload_model")[0] == "Model unloaded; its memory is free."
    with pytest.raises(AppError, match="Load a model first"):
        convert(client, short)


def launch_browser(playwright, user_data: Path, *flags: str):
    """Debian's Chromium with the closed-network flags (and `flags`); under CI a browser that cannot start fails
    the test."""
    try:
        return playwright.chromium.launch_persistent_context(
            str(user_data), executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS + list(flags),
            viewport={"width": 1280, "height": 900})
    except Exception as err:  # playwright raises its own Error for a missing or broken browser
        if _on_ci():
            pytest.fail(f"CI: headless Chromium ({CHROMIUM}) did not start: {err}")
        pytest.skip(f"headless Chromium ({CHROMIUM}) did not start: {err}")


def capture_conversion(url: str, audio: Path, shot: Path, user_data: Path) -> dict:
    """In a browser: choose trained/tiny, load, upload `audio`, convert, wait for the result to play; saves a
    screenshot to `shot`. Returns what the page showed and which hosts it asked for."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright, user_data)
        page = browser.new_page()
        hosts = set()
        page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
        page.goto(url)
        page.locator("#model-folder input").click()
        page.get_by_role("option", name="tiny", exact=True).click()
        page.locator("#load-model").click()
        page.wait_for_function("() => document.querySelector('#model-status textarea').value.startsWith('Loaded')",
                               timeout=60_000)
        page.locator("#audio-in input[type=file]").set_input_files(str(audio))
        page.locator("#convert").click()
        link = page.locator("#result a.download-link")
        link.wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#result #duration')?.textContent.trim() !== '0:00'",
                               timeout=30_000)
        body = page.request.get(link.get_attribute("href")).body()
        shown = {"download": link.get_attribute("download"), "body": body, "hosts": hosts,
                 "duration": page.locator("#result #duration").text_content().strip(),
                 "status": page.locator("#model-status textarea").input_value()}
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return shown


def test_browser_loads_converts_and_plays(server: str, project: Path, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    shot = tmp_path / "webui.png"
    shown = capture_conversion(server, project / "raw/short.wav", shot, Path(tempfile.mkdtemp(dir=tmp_path)))
    name = "short.wav_0key_speaker0_sovits_pm.flac"
    assert shown["status"].startswith("Loaded on cpu") and shown["download"] == name
    assert shown["body"] == (project / "results" / name).read_bytes() and shown["duration"] == "0:02"
    assert shown["hosts"] == {server.split("/")[2]}  # nothing is fetched from elsewhere: works offline
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("SOVITS_WEBUI_SCREENSHOT"):  # how docs/webui.png is made
        shutil.copy(shot, target)


def test_live_session_converts_as_the_stream_converter(project: Path, monkeypatch, single_thread) -> None:
    """The Live tab's callback work: browser pieces of any length, gathered into chunks, give the samples of
    StreamConverter run on those chunks; Stop resets, so a second take starts from silence again."""
    from inference.streaming import StreamConverter
    from webui.live import LiveOptions, LiveSession, to_int16
    from webui.state import ModelFiles, ModelSlot, WebError

    monkeypatch.chdir(project)
    slot, live = ModelSlot(), LiveSession()
    options = LiveOptions("speaker1", tran=3, chunk_seconds=0.25, crossfade=0.03, f0_predictor="pm")
    with pytest.raises(WebError, match="Load a model first"):
        live.start(slot, options)
    slot.load(ModelFiles("trained/tiny/G_1.pth", "trained/tiny/config.json"), "cpu")
    voice = sf.read(project / "raw/short.wav", dtype="int16")[0][:SR]
    pieces = np.split(voice, [4000, 4100, 15000, 30000])  # as the browser sends them: any length

    def take() -> list[np.ndarray]:
        live.start(slot, options)
        return [live.feed(slot, SR, piece, options) for piece in pieces]

    outs = take()
    n = round(0.25 * SR)
    assert [len(o) for o in outs] == [0, 0, n, n, 2 * n]  # a chunk is converted once it is full
    direct = StreamConverter(slot.svc, "pm", crossfade=0.03)
    audio = voice.astype(np.float32) / 32768
    expected = np.concatenate([direct.process(audio[i:i + n], "speaker1", 3) for i in range(0, 4 * n, n)])
    assert np.array_equal(np.concatenate(outs), expected)
    assert "Real-time factor" in live.latency(options) and "median of 4 chunks" in live.latency(options)
    rate, kept = live.finish()
    assert rate == SR and np.array_equal(kept, to_int16(expected))
    assert np.array_equal(np.concatenate(take()), expected)  # the stream was reset: the same samples again
    message = live.player_message(expected)
    assert message.startswith(f"{SR},0,") and live.player_message(expected).startswith(f"{SR},1,")
    import soxr  # a 48 kHz microphone: one running resampler, so where the browser cut its pieces leaves no trace
    mic = to_int16(soxr.resample(audio, SR, 48000))
    takes = []
    for cuts in ([], [4000, 4100, 15000, 30000]):
        live.start(slot, options)
        takes.append(np.concatenate([live.feed(slot, 48000, piece, options) for piece in np.split(mic, cuts)]))
    assert len(takes[0]) == 3 * n and np.array_equal(takes[0], takes[1])


def test_live_pauses_while_a_song_converts(project: Path, monkeypatch, single_thread) -> None:
    """A song conversion holds the model for its whole length: the microphone gets silence at its own pace
    meanwhile (no chunk waits behind the song), and afterwards the stream starts over from silence."""
    import threading

    from inference.streaming import StreamConverter
    from webui.live import LiveOptions, LiveSession
    from webui.state import ModelFiles, ModelSlot

    monkeypatch.chdir(project)
    slot, live = ModelSlot(), LiveSession()
    slot.load(ModelFiles("trained/tiny/G_1.pth", "trained/tiny/config.json"), "cpu")
    seen = []  # the flag as the song's own progress reports see it
    slot.convert(project / "raw/short.wav", "short.wav", "speaker0", 0, {"f0_predictor": "pm"},
                 progress=lambda *_: seen.append(slot.converting.is_set()))
    assert seen and all(seen) and not slot.converting.is_set()
    options = LiveOptions("speaker1", chunk_seconds=0.25, crossfade=0.03, f0_predictor="pm")
    voice = sf.read(project / "raw/short.wav", dtype="int16")[0][:SR]
    n = round(0.25 * SR)
    live.start(slot, options)
    assert len(live.feed(slot, SR, voice[:n], options)) == n
    song_started, song_may_end = threading.Event(), threading.Event()

    def song() -> None:  # stands for a long conversion: the model's lock held, the flag set
        with slot.holding():
            slot.converting.set()
            song_started.set()
            song_may_end.wait(30)
            slot.converting.clear()

    holder = threading.Thread(target=song)
    holder.start()
    assert song_started.wait(10)
    outs = []
    feeder = threading.Thread(target=lambda: outs.append(live.feed(slot, 48000, voice[:4800], options)))
    feeder.start()
    feeder.join(10)
    answered = not feeder.is_alive()
    song_may_end.set()
    holder.join(10)
    assert answered and np.array_equal(outs[0], np.zeros(round(4800 * SR / 48000), np.float32))
    assert live.latency(options).startswith("**Paused**")
    after = [live.feed(slot, SR, voice[i:i + n], options) for i in range(n, 3 * n, n)]
    fresh = StreamConverter(slot.svc, "pm", crossfade=0.03)
    audio = voice.astype(np.float32) / 32768
    assert np.array_equal(np.concatenate(after),
                          np.concatenate([fresh.process(audio[i:i + n], "speaker1", 0) for i in range(n, 3 * n, n)]))
    assert "Real-time factor" in live.latency(options)


def test_browser_converts_the_microphone_live(server: str, client, project: Path, tmp_path: Path) -> None:
    """Chromium's fake microphone plays a 48 kHz voice into the Live tab: converted chunks reach the page's
    player and the measured latency is shown; Stop offers the converted take."""
    pytest.importorskip("playwright")
    import soxr
    from playwright.sync_api import sync_playwright

    voice = sf.read(project / "raw/short.wav", dtype="float32")[0]
    mic = tmp_path / "mic.wav"  # Chromium's fake capture reads 16-bit PCM WAV; 48 kHz as most microphones
    sf.write(mic, soxr.resample(voice, SR, 48000), 48000, subtype="PCM_16")
    client.predict(api_name="/unload_model")
    with sync_playwright() as playwright:
        browser = launch_browser(playwright, Path(tempfile.mkdtemp(dir=tmp_path)), "--use-fake-ui-for-media-stream",
                                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}")
        page = browser.new_page()
        page.goto(server)
        page.get_by_role("tab", name="Live").click()
        page.get_by_text("No model is loaded: load one in the Inference tab").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Inference").click()
        page.locator("#model-folder input").click()
        page.get_by_role("option", name="tiny", exact=True).click()
        page.locator("#load-model").click()
        page.wait_for_function("() => document.querySelector('#model-status textarea').value.startsWith('Loaded')",
                               timeout=60_000)
        page.get_by_role("tab", name="Live").click()
        page.get_by_text("Press Record to start.").wait_for(timeout=30_000)
        page.locator("#live-in .record-button").click()
        page.wait_for_function("() => (window.sovitsLive?.chunks ?? 0) >= 4", timeout=60_000)
        page.locator("#live-status").get_by_text("Latency about").wait_for(timeout=30_000)
        played = page.evaluate("() => ({seconds: window.sovitsLive.seconds, state: window.sovitsLive.ctx.state, "
                               "rate: window.sovitsLive.ctx.sampleRate, time: window.sovitsLive.ctx.currentTime})")
        status = page.locator("#live-status").inner_text()
        page.locator("#live-in .stop-button").click()
        page.wait_for_function("() => document.querySelector('#live-take #duration')?.textContent.trim() > '0:00'",
                               timeout=30_000)
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        browser.close()
    assert played["state"] == "running" and played["rate"] == SR and played["time"] > 0
    assert played["seconds"] >= 4 * 0.5 - 1e-6  # four chunks of 0.5 s (the default) were scheduled to play
    assert "chunk 0.50 s" in status and f"crossfade {5 * 512 / SR:.3f} s" in status  # 0.05 s in whole hops
    assert "Real-time factor" in status
    assert (tmp_path / "live.png").stat().st_size > 10_000


def test_a_replaced_or_unloaded_model_is_freed(project: Path, monkeypatch) -> None:
    import weakref

    from webui.state import ModelFiles, ModelSlot

    monkeypatch.chdir(project)
    slot, files = ModelSlot(), ModelFiles("trained/tiny/G_1.pth", "trained/tiny/config.json")
    slot.load(files, "cpu")
    first = weakref.ref(slot.svc)
    slot.load(files, "cpu")
    assert first() is None and slot.svc is not None
    second = weakref.ref(slot.svc)
    assert slot.unload() == "Model unloaded; its memory is free." and second() is None


def test_live_starts_over_when_the_model_changes(project: Path, monkeypatch, single_thread) -> None:
    """Samples gathered for one model (at its rate) are not fed to the next one loaded mid-recording."""
    from webui.live import LiveOptions, LiveSession
    from webui.state import ModelFiles, ModelSlot

    monkeypatch.chdir(project)
    slot, live = ModelSlot(), LiveSession()
    files = ModelFiles("trained/tiny/G_1.pth", "trained/tiny/config.json")
    slot.load(files, "cpu")
    options = LiveOptions("speaker1", chunk_seconds=0.25, crossfade=0.03, f0_predictor="pm")
    voice = sf.read(project / "raw/short.wav", dtype="int16")[0][:SR]
    half = round(0.25 * SR) // 2
    live.start(slot, options)
    assert len(live.feed(slot, SR, voice[:half], options)) == 0
    slot.load(files, "cpu")  # a new model while the microphone is on
    assert len(live.feed(slot, SR, voice[half:2 * half + 1], options)) == 0  # the first half was dropped
    assert len(live.feed(slot, SR, voice[2 * half + 1:4 * half + 2], options)) == round(0.25 * SR)


def test_an_uploaded_mix_file_is_read_as_data(tmp_path: Path) -> None:
    from inference.speaker_mix import SpkMixError, read_spk_mix_file

    good = tmp_path / "good.py"
    good.write_text("import os\nspk_mix_map = {0: [[0., 1., 1., 1.]], 1: [[0., 1., 0., 0.]]}\n")
    assert read_spk_mix_file(good) == {0: [[0., 1., 1., 1.]], 1: [[0., 1., 0., 0.]]}
    for text in ("spk_mix_map = [[0, 1, 1, 1]]\n", "spk_mix_map = 5\n", "spk_mix_map = os.environ\n", "x = 1\n"):
        bad = tmp_path / "bad.py"
        bad.write_text(text)
        with pytest.raises(SpkMixError, match=r"^bad\.py must set spk_mix_map = \{speaker_id: "):
            read_spk_mix_file(bad)
