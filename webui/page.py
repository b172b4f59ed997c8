"""The gradio page of webUI.py: one function per tab (a new tab is one more builder called from `build_page`),
callbacks that turn errors into page messages. The work itself is in webui.state.

Option controls carry inference_main.py's argument names and defaults (read from inference/command.py, its
parser), so the page and the command line cannot drift apart.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from inference import command
from webui import state
from webui.state import ModelFiles, ModelSlot, WebError
from webui.tts import DEFAULT_PITCH, DEFAULT_RATE, PITCH_RANGE, RATE_RANGE, VOICES, TTSError, languages

__all__ = ["OPTION_NAMES", "build_page", "theme"]

logger = logging.getLogger(__name__)
_DEFAULTS = vars(command.defaults())
OUTPUT_FORMATS = ("flac", "wav", "ogg", "mp3")
SOURCES = ("trained/ folder", "upload")
UPLOAD_NOTE = "Uploads above {limit} are refused."
INTRO = """# so-vits-svc 4.1
Load a model, pick a speaker, set the options and convert a song or a typed sentence. Everything runs on this
machine; nothing is sent anywhere. Results are written to `results/` under the same names as
`inference_main.py` gives them."""
TTS_NOTE = ("Speech is made offline by eSpeak NG, which sounds robotic; the conversion changes the voice but keeps "
            "that robotic delivery. Best for trying a model out, not for songs.")


def _control(name: str, label: str, info: str, **kwargs: Any) -> gr.components.Component:
    """An input for inference_main.py's option `name`, starting at its command-line default."""
    value = _DEFAULTS[name]
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label, info=info)
    if name == "wav_format":
        return gr.Dropdown(list(OUTPUT_FORMATS), value=value, label=label, info=info)
    if name == "f0_predictor":
        from modules.F0Predictor import F0_PREDICTORS
        return gr.Dropdown(list(F0_PREDICTORS), value=value, label=label, info=info)
    if "minimum" in kwargs:
        return gr.Slider(value=value, label=label, info=info, **kwargs)
    return gr.Number(value=value, label=label, info=info, **kwargs)


# (inference_main.py argument, label, one line of advice, control settings), in page order
OPTIONS = (
    ("auto_predict_f0", "Automatic F0", "Speech only: the model predicts pitch itself; singing goes off key, "
     "and transpose is ignored.", {}),
    ("f0_predictor", "F0 predictor", "pm is fast, crepe/rmvpe/fcpe follow the voice best, dio/harvest are "
     "robust to noise.", {}),
    ("cluster_infer_ratio", "Cluster / retrieval ratio", "Share of the clustering or feature-retrieval result: "
     "higher sounds more like the target, less clear. 0 = off.", {"minimum": 0, "maximum": 1, "step": 0.05}),
    ("slice_db", "Slice threshold (dB)", "Silence level where the song is cut; -40 suits most, -30 for noisy "
     "input, -50 to keep breaths.", {"minimum": -100, "maximum": 0, "step": 1}),
    ("noice_scale", "Noise scale", "Randomness of the voice; leave at 0.4 unless you know why.", {}),
    ("pad_seconds", "Pad seconds", "Silence added around each slice so its edges sound clean (0.5 is fine).", {}),
    ("clip", "Forced slice length (s)", "Cut long slices to this length to save memory; 0 = only at silences.",
     {}),
    ("linear_gradient", "Cross-fade length (s)", "Blend forced slices over this long to hide the seam; 0 = "
     "no blend.", {}),
    ("linear_gradient_retain", "Cross-fade retain", "Share of the cross-fade actually blended (0-1]; the rest "
     "is dropped.", {"minimum": 0.05, "maximum": 1, "step": 0.05}),
    ("enhancer_adaptive_key", "Enhancer adaptive key", "Shift the enhancer's range up by this many semitones "
     "for very high voices.", {"precision": 0}),
    ("k_step", "Shallow-diffusion steps", "More steps follow the diffusion model more closely and take longer "
     "(at most its k_step_max).", {"minimum": 1, "maximum": 1000, "step": 1}),
    ("second_encoding", "Second encoding", "Re-encode the So-VITS output before diffusion; can help or hurt, "
     "try both.", {}),
    ("loudness_envelope_adjustment", "Loudness envelope", "1 keeps the output's loudness, 0 copies the input's; "
     "in between mixes.", {"minimum": 0, "maximum": 1, "step": 0.05}),
    ("f0_filter_threshold", "F0 filter threshold", "crepe, rmvpe and fcpe: higher drops more doubtful pitch "
     "(fewer wrong notes, more gaps).", {"minimum": 0, "maximum": 1, "step": 0.01}),
    ("wav_format", "Output format", "File format of the result.", {}),
)
OPTION_NAMES = tuple(name for name, *_ in OPTIONS)


def _messages(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a callback; known errors become a message on the page (gr.Error), anything else too, with the
    traceback on the console only."""
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except state.user_errors() as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # a page must answer; the console keeps the details
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(err).__name__}): {err} — details are on the console",
                           print_exception=False) from None
    run.__name__ = fn.__name__
    run.__wrapped__ = fn
    return run


def _path(upload: Any) -> str:
    return "" if upload is None else str(upload)


def _option_callback(convert: Callable[..., Any], leading: tuple[str, ...]) -> Callable[..., Any]:
    """A callback for the `leading` inputs, speaker, transposition, every option and the speaker-mix file, with
    those names in the page's API; calls convert(*leading, speaker, tran, {option: value}, mix file or None,
    progress(i, n))."""
    def run(*args: Any) -> Any:
        *args, bar = args
        n = len(leading)
        speaker, tran, *options, mix = args[n:]
        return convert(*args[:n], speaker, int(tran), dict(zip(OPTION_NAMES, options)), _path(mix) or None,
                       lambda i, total: bar((i, total), desc=f"slice {min(i + 1, total)} of {total}", unit="slices"))
    names = (*leading, "speaker", "tran", *OPTION_NAMES, "spk_mix_file")
    param = inspect.Parameter
    run.__signature__ = inspect.Signature([param(name, param.POSITIONAL_OR_KEYWORD) for name in names] + [
        param("progress", param.POSITIONAL_OR_KEYWORD, default=gr.Progress())])  # gradio fills a default Progress
    run.__name__ = convert.__name__
    return run


def model_section(slot: ModelSlot) -> tuple[gr.Dropdown, gr.Dropdown]:
    """Where the model comes from (a trained/ folder or uploads), device and model-level switches, Load / Unload.
    Returns the speaker and device dropdowns."""
    source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Model source",
                      info="A folder under trained/ (see trained/README.md), or files uploaded here.")
    with gr.Group(visible=True) as local_group:
        with gr.Row():
            folder = gr.Dropdown(list(state.folder_models()), label="Model folder", scale=4, elem_id="model-folder",
                                 info="Every folder under trained/ with one G .pth and one config .json.")
            refresh = gr.Button("Refresh", scale=1)
        holds = gr.Markdown()
    with gr.Group(visible=False) as upload_group:
        with gr.Row():
            g_file = gr.File(label="Model: G_*.pth or a release file", file_types=[".pth"])
            config = gr.File(label="Config: config.json", file_types=[".json"])
        with gr.Row():
            diff_model = gr.File(label="Optional: diffusion model_*.pt", file_types=[".pt"])
            diff_config = gr.File(label="Optional: diffusion config.yaml", file_types=[".yaml"])
            cluster = gr.File(label="Optional: kmeans_10000.pt or feature_and_index.pkl", file_types=[".pt", ".pkl"])
    with gr.Row():
        device = gr.Dropdown(["auto", "cpu"], value="auto", label="Device", allow_custom_value=True,
                             info="auto: the GPU when there is one.")
        enhance = gr.Checkbox(label="NSF-HiFiGAN enhancer", info="Cleaner sound for small datasets; needs "
                              "pretrain/nsf_hifigan/. Off with shallow diffusion.")
        shallow = gr.Checkbox(label="Shallow diffusion", info="Refine with the diffusion model (needs its model "
                              "and config.yaml; on by itself when a diffusion model is uploaded).")
        only_diff = gr.Checkbox(label="Diffusion only", info="Convert with the diffusion model alone.")
    with gr.Row():
        load = gr.Button("Load model", variant="primary", elem_id="load-model")
        unload = gr.Button("Unload model")
    status = gr.Textbox(label="Model", value="No model is loaded.", interactive=False, elem_id="model-status")
    speaker = gr.Dropdown([], label="Speaker", info="Filled from the loaded config.", allow_custom_value=True)

    def show(src: str) -> tuple[Any, Any]:
        return gr.update(visible=src == SOURCES[0]), gr.update(visible=src == SOURCES[1])

    def describe(name: str | None) -> str:
        files = state.folder_models().get(name or "")
        return f"Holds: {files.describe()}" if files else ""

    def load_model(model_source: str, folder: str | None, model: Any, config: Any, diffusion_model: Any,
                   diffusion_config: Any, cluster: Any, device: str, enhance: bool, shallow_diffusion: bool,
                   only_diffusion: bool) -> tuple[str, Any]:
        if model_source == SOURCES[0]:
            files = state.folder_models().get(folder or "")
            if files is None:
                raise WebError(f"choose a model folder under {state.TRAINED}/ (Refresh rescans it)" if not folder
                               else f"{state.TRAINED}/{folder} no longer holds one .pth and one .json; Refresh")
        else:
            if model is None or (config is None and not only_diffusion):
                raise WebError("upload the model (.pth) and its config.json")
            files = ModelFiles(*(_path(f) for f in (model, config, diffusion_model, diffusion_config, cluster)))
            shallow_diffusion = shallow_diffusion or (diffusion_model is not None and not only_diffusion)
        message = slot.load(files, device, enhance, shallow_diffusion, only_diffusion)
        return message, gr.update(choices=slot.speakers, value=slot.speakers[0])

    source.change(show, source, [local_group, upload_group], api_name=False)
    folder.change(describe, folder, holds, api_name=False)
    refresh.click(lambda: gr.update(choices=list(state.folder_models())), outputs=folder, api_name="refresh_models")
    load.click(_messages(load_model), [source, folder, g_file, config, diff_model, diff_config, cluster, device,
                                       enhance, shallow, only_diff], [status, speaker], api_name="load_model")
    unload.click(_messages(lambda: (slot.unload(), gr.update(choices=[], value=None))), outputs=[status, speaker],
                 api_name="unload_model")
    return speaker, device


def options_section() -> tuple[gr.Number, list[gr.components.Component], gr.File, gr.Markdown, gr.Dropdown]:
    """Transposition and every conversion option of inference_main.py (its defaults), with a line of advice."""
    controls = {}
    with gr.Row():
        tran = gr.Number(value=0, precision=0, label="Transpose (semitones)",
                         info="+12 is an octave up; use it when the source and target voices differ in range.")
        for name, label, info, settings in OPTIONS[:2]:
            controls[name] = _control(name, label, info, **settings)
    f0_note = gr.Markdown()
    with gr.Accordion("More options", open=False):
        for row in (OPTIONS[2:6], OPTIONS[6:10], OPTIONS[10:]):
            with gr.Row():
                for name, label, info, settings in row:
                    controls[name] = _control(name, label, info, **settings)
        spk_mix = gr.File(label="Dynamic speaker mix (optional): a file in spkmix.py's format",
                          file_types=[".py", ".txt"])
    return tran, [controls[name] for name in OPTION_NAMES], spk_mix, f0_note, controls["f0_predictor"]


def _outputs(elem_id: str) -> tuple[gr.Audio, gr.File]:
    return (gr.Audio(label="Result", type="filepath", interactive=False, elem_id=elem_id, buttons=["download"]),
            gr.File(label="Download", elem_id=f"{elem_id}-file"))


def inference_tab(page: gr.Blocks, slot: ModelSlot) -> None:
    """Model, options, and conversion of audio or typed text."""
    with gr.Tab("Inference"):
        gr.Markdown(INTRO)
        with gr.Accordion("1. Model", open=True):
            speaker, device = model_section(slot)
        with gr.Accordion("2. Options", open=True):
            tran, controls, spk_mix, f0_note, f0_predictor = options_section()
        with gr.Tabs():
            with gr.Tab("Audio to audio"):
                audio = gr.Audio(label="Song or speech (upload or record)", sources=["upload", "microphone"],
                                 type="filepath", elem_id="audio-in", buttons=["download"])
                with gr.Row():
                    convert = gr.Button("Convert", variant="primary", elem_id="convert")
                    stop = gr.Button("Stop")
                result, download = _outputs("result")
            with gr.Tab("Text to audio"):
                gr.Markdown(TTS_NOTE)
                text = gr.Textbox(label="Text", lines=3)
                with gr.Row():
                    language = gr.Dropdown(["en"], value="en", label="Language", allow_custom_value=True,
                                           info="eSpeak NG language code (en, en-us, de, fr, cmn, ja, ...).")
                    voice = gr.Dropdown(list(VOICES), value="default", label="Voice")
                    rate = gr.Slider(*RATE_RANGE, value=DEFAULT_RATE, step=1, label="Rate (words per minute)")
                    pitch = gr.Slider(*PITCH_RANGE, value=DEFAULT_PITCH, step=1, label="Pitch")
                with gr.Row():
                    speak = gr.Button("Speak and convert", variant="primary")
                    stop_tts = gr.Button("Stop")
                tts_result, tts_download = _outputs("tts-result")

    def convert_audio(audio: str | None, speaker: str, tran: int, options: dict, mix: str | None,
                      progress: Callable[[int, int], None]) -> tuple[str, str]:
        if not audio:
            raise WebError("upload or record the audio to convert first")
        out = str(slot.convert(audio, Path(audio).name, speaker, tran, options, mix, progress))
        return out, out

    def convert_text(text: str, language: str, voice: str, rate: float, pitch: float, speaker: str, tran: int,
                     options: dict, mix: str | None, progress: Callable[[int, int], None]) -> tuple[str, str]:
        out = str(slot.convert_text(text, language, voice, int(rate), int(pitch), speaker, tran, options, mix,
                                    progress))
        return out, out

    shared = [speaker, tran, *controls, spk_mix]
    convert.click(_messages(_option_callback(convert_audio, ("audio",))), [audio, *shared], [result, download],
                  api_name="convert")
    speak.click(_messages(_option_callback(convert_text, ("text", "language", "voice", "rate", "pitch"))),
                [text, language, voice, rate, pitch, *shared], [tts_result, tts_download], api_name="text_to_speech")
    for button, name in ((stop, "stop"), (stop_tts, False)):
        button.click(lambda: gr.Info(slot.stop()), queue=False, api_name=name)

    def environment() -> tuple[Any, Any, Any, str]:
        """Filled once the page is up (the first call loads torch): devices, F0 predictors, TTS languages."""
        available, missing = state.f0_availability()
        note = "".join(f"\n- {name}: {why}" for name, why in missing.items())
        try:
            langs = gr.update(choices=languages())
        except TTSError as err:
            langs, note = gr.update(), note + f"\n- text to speech: {err}"
        return (gr.update(choices=state.device_choices()), gr.update(choices=available), langs,
                "Not available here:" + note if note else "")

    page.load(_messages(environment), outputs=[device, f0_predictor, language, f0_note], api_name=False)


LIVE_NOTE = ("Speak or sing into the microphone: the converted voice plays here as you go, one chunk at a time. "
             "Wear headphones, or the speakers feed the microphone. The voice comes back a chunk and a crossfade "
             "late, plus the time a chunk takes to convert; a real-time factor under 1 keeps up.")
NO_MODEL = "No model is loaded: load one in the Inference tab (1. Model), then come back and record."
# Plays each converted chunk right after the one before (Web Audio, at the model's rate); chunk 0 starts over.
PLAYER_JS = """(message) => {
  if (!message) return;
  const [rate, seq, data] = message.split(",");
  let live = window.sovitsLive;
  if (!live || live.ctx.sampleRate !== +rate) {
    live?.ctx.close();
    live = window.sovitsLive = {ctx: new AudioContext({sampleRate: +rate}), next: 0, seconds: 0, chunks: 0};
  }
  if (+seq === 0) live.next = 0;
  live.ctx.resume();
  const pcm = new Int16Array(Uint8Array.from(atob(data), (c) => c.charCodeAt(0)).buffer);
  const buffer = live.ctx.createBuffer(1, pcm.length, +rate);
  buffer.getChannelData(0).set(Float32Array.from(pcm, (v) => v / 32768));
  const source = live.ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(live.ctx.destination);
  live.next = Math.max(live.next, live.ctx.currentTime + 0.02);
  source.start(live.next);
  live.next += buffer.duration;
  live.seconds += buffer.duration;
  live.chunks += 1;
}"""


def live_tab(slot: ModelSlot) -> None:
    """The microphone converted as it is heard (webui.live), with the measured latency."""
    from webui.live import LiveOptions, LiveSession

    with gr.Tab("Live") as tab:
        gr.Markdown(LIVE_NOTE)
        with gr.Row():
            speaker = gr.Dropdown([], label="Speaker", allow_custom_value=True, info="Of the loaded model.")
            tran = gr.Number(value=0, precision=0, label="Transpose (semitones)", info="+12 is an octave up.")
            f0 = gr.Dropdown(["fcpe"], value="fcpe", label="F0 predictor",
                             info="FCPE is the fastest that follows a voice well; pm is faster still, rougher.")
        with gr.Row():
            chunk = gr.Slider(0.25, 2, value=0.5, step=0.25, label="Chunk length (s)",
                              info="Longer: more context per chunk and more time to convert it, but later.")
            crossfade = gr.Slider(0, 0.2, value=0.05, step=0.01, label="Crossfade (s)",
                                  info="Blend between chunks against clicks; adds its length to the delay.")
            raw = gr.Checkbox(label="Raw mode", info="Convert each chunk alone: least work, no crossfade, the "
                              "seams may click.")
        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="live-in")
        status = gr.Markdown(NO_MODEL, elem_id="live-status")
        take = gr.Audio(label="Converted take (after Stop)", interactive=False, elem_id="live-take")
        player = gr.Textbox(visible="hidden", elem_id="live-out")
    session = gr.State(None)
    controls = [speaker, tran, chunk, crossfade, f0, raw]

    def options(speaker: str | None, tran: float, chunk: float, crossfade: float, f0: str, raw: bool) -> LiveOptions:
        return LiveOptions(speaker or "", float(tran or 0), float(chunk), float(crossfade), f0, bool(raw))

    def opened() -> tuple[Any, Any, str]:
        available = state.f0_availability()[0]
        f0_update = gr.update(choices=available, value="fcpe" if "fcpe" in available else available[0])
        if slot.svc is None:
            return gr.update(choices=[], value=None), f0_update, NO_MODEL
        return gr.update(choices=slot.speakers, value=slot.speakers[0]), f0_update, "Press Record to start."

    def start(live: LiveSession | None, *values: Any) -> tuple[LiveSession, str]:
        live = live or LiveSession()
        live.start(slot, options(*values))
        return live, "Listening: the first chunk is on its way."

    def step(audio: tuple[int, Any] | None, live: LiveSession | None, *values: Any) -> tuple[Any, Any, str]:
        live, opts = live or LiveSession(), options(*values)
        out = live.feed(slot, audio[0], audio[1], opts) if audio is not None else ()
        return live, live.player_message(out) if len(out) else gr.skip(), live.latency(opts)

    def stop(live: LiveSession | None) -> tuple[Any, Any]:
        return (live.finish() if live else None), gr.skip()

    def said(fn: Callable[..., Any], n_outputs: int) -> Callable[..., Any]:
        """A live callback whose problems go to the status line (a stream would repeat pop-ups every chunk)."""
        def run(*args: Any) -> Any:
            try:
                return fn(*args)
            except state.user_errors() as err:
                message = NO_MODEL if slot.svc is None else f"Not converted: {err}"
            except Exception as err:  # the page must answer; the console keeps the details
                logger.exception("unexpected error in the live tab")
                message = f"Unexpected error ({type(err).__name__}): {err} — details are on the console"
            return (*[gr.skip()] * (n_outputs - 1), message)
        return run

    live_events = dict(concurrency_id="live", api_name=False)  # one model: one chunk at a time, in order
    tab.select(opened, outputs=[speaker, f0, status], api_name=False)
    mic.start_recording(said(start, 2), [session, *controls], [session, status], **live_events)
    mic.stream(said(step, 3), [mic, session, *controls], [session, player, status], stream_every=0.25,
               **live_events)
    mic.stop_recording(said(stop, 2), session, [take, status], **live_events)
    player.change(None, player, None, js=PLAYER_JS)


def tools_tab() -> None:
    """model_mix.py and compress_model.py on uploaded models."""
    with gr.Tab("Tools"):
        with gr.Accordion("Static voice mix (model_mix.py)", open=True):
            gr.Markdown("Mix models trained with the same config into `output.pth` in the project folder: every "
                        "weight becomes the weighted sum of the models'.")
            models = gr.File(label="Models (.pth), two or more", file_count="multiple", file_types=[".pth"])
            with gr.Row():
                rates = gr.Textbox(label="Percentages", placeholder="e.g. 50, 30, 20 (default 100 each)",
                                   info="One per model, in upload order.")
                mode = gr.Radio(["convex", "linear"], value="convex", label="Mode",
                                info="convex: softmax(percent/100), sums to 1; linear: percent/100 as given.")
                mix_config = gr.File(label="Optional config.json to check against", file_types=[".json"])
            mix_button = gr.Button("Mix", variant="primary")
            mixed = gr.File(label="output.pth")
        with gr.Accordion("Model compression (compress_model.py)", open=True):
            gr.Markdown("Strip the training-only parts of a `G_*.pth`: `<name>_release[_half].pth` in the project "
                        "folder, about a third of the size, converts the same (training cannot resume from it).")
            with gr.Row():
                full = gr.File(label="Full checkpoint G_*.pth", file_types=[".pth"])
                full_config = gr.File(label="Its config.json", file_types=[".json"])
                half = gr.Checkbox(label="Half precision (-hf)", info="float16 weights: half the size again.")
            compress_button = gr.Button("Compress", variant="primary")
            compressed = gr.File(label="Release file")

    def mix(files: list[Any] | None, percent: str, how: str, cfg: Any) -> str:
        paths = [_path(f) for f in files or []]
        try:
            values = [float(v) for v in percent.replace(",", " ").split()] or [100.0] * len(paths)
        except ValueError:
            raise WebError(f"percentages must be numbers separated by commas, got {percent!r}") from None
        return state.mix(paths, values, how, _path(cfg) or None)

    def compress(g: Any, cfg: Any, hf: bool) -> str:
        if g is None or cfg is None:
            raise WebError("upload the full checkpoint and its config.json")
        return state.compress(_path(g), _path(cfg), hf)

    mix_button.click(_messages(mix), [models, rates, mode, mix_config], mixed, api_name="mix_models")
    compress_button.click(_messages(compress), [full, full_config, half], compressed, api_name="compress_model")


def theme() -> gr.themes.Base:
    """The default look with the system's fonts: nothing is fetched from font services."""
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_page(slot: ModelSlot | None = None, upload_limit: str = "1 GB") -> gr.Blocks:
    slot = slot or ModelSlot()
    with gr.Blocks(title="so-vits-svc 4.1", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
        with gr.Tabs():
            inference_tab(page, slot)
            live_tab(slot)
            tools_tab()
        gr.Markdown(UPLOAD_NOTE.format(limit=upload_limit))
    return page
