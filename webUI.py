"""Tutorial's web interface: load a model (from trained/ or uploaded), convert songs and typed text, mix and
compress models, in the browser. Everything stays on this machine.

    python webUI.py [--host 127.0.0.1] [--port 7860]

then open the printed address. trained/<name>/ holds one model per folder (see trained/README.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="refused: nothing is sent off this machine")
    p.add_argument("--max_upload_mb", type=int, default=1024, help="largest upload accepted, in MB")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.share:
        print("error: --share is refused: it would open a public tunnel through an outside server, and this "
              "toolkit sends nothing off the machine; use --host 0.0.0.0 to reach the page on your network",
              file=sys.stderr)
        return 2
    for name, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"),
                        ("HF_HUB_DISABLE_TELEMETRY", "1"), ("GRADIO_SSR_MODE", "False")):
        os.environ[name] = value  # before gradio is imported: no telemetry, version checks or downloads
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from webui.page import build_page, theme

    limit = f"{args.max_upload_mb} MB"
    page = build_page(upload_limit=limit)
    try:
        page.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, quiet=True,
                    prevent_thread_lock=True, max_file_size=f"{args.max_upload_mb}mb", theme=theme(),
                    allowed_paths=[os.path.abspath("results")], footer_links=[])
    except OSError as err:
        print(f"error: cannot serve on {args.host}:{args.port} ({err}); choose another --port", file=sys.stderr)
        return 1
    print(f"webUI: serving http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    try:
        page.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
