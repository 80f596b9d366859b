"""Time and peak memory of each interpreter on one image, every method in a fresh process.

    python bench/interpret_cost.py                       # ResNet50, 224 px, all six methods
    python bench/interpret_cost.py --backbone efficientnet_lite0 --methods gradcam,occlusion

Each method runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own:
torch's allocations are invisible to tracemalloc. "model RSS" is the process after building the
model and one warm-up forward pass; "peak RSS" is the maximum over the whole explanation. Times
exclude building the model. Random weights (no download) and a random image: the cost does not
depend on what the weights are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

METHODS = ("feature_maps", "filters", "integrated_gradients", "saliency", "occlusion", "gradcam")

CHILD = r"""
import json, resource, sys, time
import torch
from tlkit.interpret import explain
from tlkit.models import build_model

backbone, size, method, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(backbone, "gap", num_classes=10, image_size=size, pretrained=False).eval()
image = torch.randn(1, 3, size, size)
with torch.no_grad():
    model(image)  # warm-up: first-call allocations belong to the model, not to the method
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
options = {"progress": False} if method == "filters" else {}
start = time.perf_counter()
explanation = explain(model, image, method, options=options)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"method": method, "seconds": seconds, "model_mib": base / 1024, "peak_mib": peak / 1024,
                  "summary": explanation.summary(), "threads": torch.get_num_threads()}))
"""


def measure(backbone: str, size: int, method: str, threads: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, backbone, str(size), method, str(threads)],
                            capture_output=True, text=True, env={**os.environ, "TLKIT_LOAD_PLUGINS": ""})
    if result.returncode != 0:
        return {"method": method, "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated interpreter names")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    # Other processes share the CPUs: the load average says how much the times can be trusted.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [measure(args.backbone, args.image_size, m, args.threads) for m in args.methods.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.backbone}, {args.image_size} px, {os.cpu_count()} CPUs, load average {load:.1f} at start")
    print(f"{'method':<22}{'time (s)':>10}{'model RSS (MiB)':>17}{'peak RSS (MiB)':>16}  settings")
    for row in rows:
        if "error" in row:
            print(f"{row['method']:<22}  error: {row['error']}")
            continue
        print(f"{row['method']:<22}{row['seconds']:>10.1f}{row['model_mib']:>17.0f}{row['peak_mib']:>16.0f}"
              f"  {row['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
