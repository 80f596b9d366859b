"""Accuracy from scratch and by transfer on a real public image data set that works offline.

The data set is the UCI optical-recognition handwritten digits (1,797 grey 8x8 images, 10 classes)
that ships inside scikit-learn, so no download is needed. It is exported once as a
``train/val/test/<digit>/*.png`` folder (60/20/20, stratified, seeded) and then trained on with the
ordinary ``tlkit fit`` command:

1. ``seed_cnn`` from scratch (the lecture's MNIST network),
2. ``efficientnet_lite0`` pretrained on ImageNet, head only (fast feature extraction),
3. ``efficientnet_lite0`` pretrained on ImageNet, fully fine-tuned.

Each line prints the test accuracy (``tlkit evaluate`` on the test split) and the wall time.

    python bench/public_dataset.py [--image-size 64] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def export_digits(root: Path, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    index = np.arange(len(images))
    train, rest = train_test_split(index, test_size=0.4, stratify=digits.target, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=seed)
    for part, indices in (("train", train), ("val", val), ("test", test)):
        for i in indices:
            folder = root / part / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root


def run(cmd):
    started = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result.stdout, time.time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64, help="pixels for efficientnet_lite0 (seed_cnn uses 28)")
    parser.add_argument("--work", help="folder for data and runs (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="tlkit-digits-"))
    data = export_digits(work / "digits") if not (work / "digits").is_dir() else work / "digits"
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; data: sklearn digits (UCI optdigits), 1797 images, 10 classes")
    setups = [
        ("seed_cnn from scratch", ["--backbone", "seed_cnn", "--head", "flatten", "--image-size", "28",
                                   "--tune", "full", "--lr", "3e-3"]),
        ("efficientnet_lite0, head only", ["--backbone", "efficientnet_lite0", "--head", "gap",
                                           "--image-size", str(args.image_size), "--tune", "head", "--lr", "3e-3"]),
        ("efficientnet_lite0, full", ["--backbone", "efficientnet_lite0", "--head", "gap",
                                      "--image-size", str(args.image_size), "--tune", "full", "--lr", "3e-3",
                                      "--backbone-lr-factor", "0.3"]),
    ]
    print(f"{'setup':32} {'test acc':>9} {'best val':>9} {'time (s)':>9}")
    for name, extra in setups:
        run_dir = work / "runs" / name.split(",")[0].replace(" ", "_") / extra[extra.index("--tune") + 1]
        _, seconds = run(["tlkit", "fit", str(data), "--out", str(run_dir), "--epochs", str(args.epochs),
                          "--quiet", *extra])
        out, _ = run(["tlkit", "evaluate", str(run_dir), str(data), "--json"])
        report = json.loads(out)
        best = json.loads((run_dir / "metrics.json").read_text())["best"]
        print(f"{name:32} {report['accuracy']:9.1%} {best['val_accuracy']:9.1%} {seconds:9.1f}", flush=True)


if __name__ == "__main__":
    main()
