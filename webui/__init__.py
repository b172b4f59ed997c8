"""The web page of webUI.py: `page` builds the gradio tabs, `state` does the work behind them (models under
trained/, conversions through inference_main.py's options and the same `Svc`), `tts` speaks text offline.
It sits on the scripts' floor: it reads inference_main.py's parser so that the page and the command line
share one set of options and defaults."""
