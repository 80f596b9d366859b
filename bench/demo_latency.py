"""Demo predict latency (the Gradio app, through gradio_client) against a bare forward pass.

A run directory is made from efficientnet_lite0 with its ImageNet weights and a 4-class ``gap`` head
(no training needed for timing), then served with ``tlkit demo RUN_DIR --port P`` in a subprocess,
exactly as a user starts it. The benchmark calls its ``predict`` endpoint with
``gradio_client.Client.predict(handle_file(image), 3, api_name="/predict")`` and, as a browser does,
with plain HTTP (upload, ``/gradio_api/call/predict``, server-sent events), and compares the median
latencies with, in this process, on the same model and image:

* a bare forward pass: ``model(x)`` under ``torch.inference_mode`` on the already-preprocessed tensor;
* tlkit's in-process predictor: ``Predictor.top_k(image)`` (resize, normalise, forward, softmax).

Calls alternate (bare, predictor, gradio_client, HTTP, bare, ...) with a 50 ms pause before each, so
that the server has finished one answer before the next measurement starts, and drift in machine
load is shared out. Target: demo via gradio_client / bare forward <= 1.2x.

    python bench/demo_latency.py [--image-size 224] [--calls 30] [--port 7871]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, median, quiet_env, temp_dir, tlkit_command  # noqa: E402

TARGET = 1.2


def make_run(run_dir: Path, image_size: int) -> None:
    from tlkit.models import build_model
    from tlkit.runs import save_model
    from tlkit.sample_data import SAMPLE_CLASSES

    model = build_model("efficientnet_lite0", "gap", num_classes=len(SAMPLE_CLASSES), image_size=image_size,
                        pretrained=True, class_names=list(SAMPLE_CLASSES))
    save_model(model.eval(), run_dir)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_for(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"tlkit demo exited with {server.returncode}:\n{server.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/config", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"tlkit demo did not answer at {url} within {timeout:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=30, help="timed calls of each kind")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--startup-timeout", type=float, default=180)
    args = parser.parse_args()

    import httpx
    import torch
    from gradio_client import Client, handle_file

    from tlkit.images import load_rgb
    from tlkit.predict import Predictor
    from tlkit.runs import load_model
    from tlkit.sample_data import make_sample_dataset

    print("== demo predict latency vs a bare forward pass ==")
    print(describe_machine())
    print(f"setup: efficientnet_lite0 + gap (4 classes) at {args.image_size} px, one {args.image_size} px PNG, "
          f"{args.calls} calls each, interleaved")
    with temp_dir("tlkit-bench-demo-") as work:
        run_dir = work / "run"
        make_run(run_dir, args.image_size)
        data = make_sample_dataset(work / "data", per_class=2, image_size=args.image_size)
        image_path = sorted((data / "val").rglob("*.png"))[0]

        port = free_port(args.port)
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*tlkit_command(), "demo", str(run_dir), "--port", str(port)],
                                  env=quiet_env(GRADIO_ANALYTICS_ENABLED="False", TLKIT_HOME=work / "home"),
                                  cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            started = time.perf_counter()
            wait_for(url, server, args.startup_timeout)
            print(f"  demo serving after {time.perf_counter() - started:.1f} s")
            client = Client(url, verbose=False)

            def demo_call():
                return client.predict(handle_file(str(image_path)), 3, api_name="/predict")

            http = httpx.Client(timeout=60)

            def http_call():
                """What a browser does: upload the image, start the event, read its server-sent events."""
                with open(image_path, "rb") as f:
                    uploaded = http.post(f"{url}/gradio_api/upload", files={"files": (image_path.name, f, "image/png")})
                file_data = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
                event = http.post(f"{url}/gradio_api/call/predict", json={"data": [file_data, 3]}).json()["event_id"]
                with http.stream("GET", f"{url}/gradio_api/call/predict/{event}") as stream:
                    kind = None
                    for line in stream.iter_lines():
                        if line.startswith("event:"):
                            kind = line.split(":", 1)[1].strip()
                        elif line.startswith("data:") and kind in ("complete", "error"):
                            if kind == "error":
                                raise RuntimeError(f"demo predict failed: {line}")
                            return line
                raise RuntimeError("demo predict: the event stream ended without a result")

            model = load_model(run_dir)
            predictor = Predictor.from_run(run_dir)
            picture = load_rgb(image_path)
            x = predictor.transform(picture).unsqueeze(0)

            @torch.inference_mode()
            def bare_forward():
                return model(x)

            def in_process():
                return predictor.top_k(picture, 3)

            answer = None
            calls = (("bare", bare_forward), ("predictor", in_process), ("demo", demo_call), ("http", http_call))
            for _ in range(3):  # warm-up: first requests set up connections, caches and threads
                answer = demo_call()
                for _, fn in calls:
                    fn()
            times = {name: [] for name, _ in calls}
            for _ in range(args.calls):
                for name, fn in calls:
                    time.sleep(0.05)  # let the server finish the previous answer: one thing at a time
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    demo, http_ms, bare, local = (median(times[k]) * 1000 for k in ("demo", "http", "bare", "predictor"))
    print(f"  demo answer: {answer}")
    print("results (median latency; ratio to the bare forward pass):")
    print(f"  bare forward pass           {bare:7.1f} ms  1.00x")
    print(f"  tlkit Predictor.top_k       {local:7.1f} ms  {local / bare:.2f}x  (+ resize, normalise, softmax)")
    print(f"  demo via HTTP (as a browser){http_ms:7.1f} ms  {http_ms / bare:.2f}x  (upload + event + "
          f"server-sent events)")
    print(f"  demo via gradio_client      {demo:7.1f} ms  {demo / bare:.2f}x  target <= {TARGET}x: "
          f"{'HOLDS' if demo / bare <= TARGET else 'MISSED'}")
    print(f"  server side (HTTP - predictor): {http_ms - local:+.1f} ms; gradio_client's own share "
          f"(gradio_client - HTTP): {demo - http_ms:+.1f} ms (it polls its message queue every 50 ms)")


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
