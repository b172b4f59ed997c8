"""The web page of webUI.py: `page` builds the gradio tabs, `state` does the work behind them (models under
trained/, conversions through inference_main.py's options and the same `Svc`), `live` converts the microphone
as it is heard, `tts` speaks text offline. It reads inference/command.py, the conversion command under
inference_main.py, so that the page and the command line share one set of options, defaults and checks."""
