"""Stand-alone launcher for the tlkit demo: ``python demo/app.py [RUN_DIR] [--port P] ...``.

The same app as ``tlkit demo`` (everything lives in :mod:`tlkit.demo_app`); this file exists for
hosts that expect an ``app.py`` (a Hugging Face Space, a container's entry point).
"""

import argparse
import os
import sys

from tlkit.demo_app import launch
from tlkit.errors import TlkitError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The tlkit Gradio demo (the same as 'tlkit demo').")
    parser.add_argument("run_dir", nargs="?", help="run to load (default: the latest under --runs-root)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--server-name", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="0.0.0.0 to serve the LAN")
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link")
    parser.add_argument("--share-server-address", help="self-hosted share server HOST:PORT (frp)")
    parser.add_argument("--auth", help="USER:PASS required to open the app")
    parser.add_argument("--runs-root", default="runs", help="where runs live (default ./runs)")
    args = parser.parse_args(argv)
    try:
        launch(run_dir=args.run_dir, port=args.port, server_name=args.server_name, share=args.share,
               auth=args.auth, share_server_address=args.share_server_address, runs_root=args.runs_root)
    except TlkitError as exc:
        print(f"demo/app.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
