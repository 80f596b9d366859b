"""Training-step speed of the options that only sometimes help: channels_last, bf16 autocast, torch.compile.

efficientnet_lite0 (+ the ``gap`` head, as ``tlkit fit`` builds it) trains on random tensors at
``--image-size``: forward, cross-entropy, backward, AdamW step. Each variant is timed in turn,
round-robin over ``--rounds`` rounds (to share out drift in machine load), and reported as images/s
and as a ratio to plain fp32 NCHW measured in the same run (above 1.00x: faster).

This is how tlkit's defaults were chosen: on a CPU ``tlkit fit`` trains in fp32 and NCHW unless
``--precision bf16-mixed`` / ``--channels-last`` / ``--compile`` are given; on a GPU it uses
bf16-mixed (16-mixed without bf16) and channels_last.

    python bench/train_step.py [--image-size 96] [--batch-size 32] [--steps 4] [--rounds 3] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine  # noqa: E402


def make_variant(name, args, device):
    import torch
    import torch.nn.functional as F

    from tlkit.models import build_model

    torch.manual_seed(0)
    model = build_model(args.backbone, "gap", num_classes=4, image_size=args.image_size, pretrained=False).to(device)
    channels_last = "channels_last" in name
    bf16 = "bf16" in name
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = torch.compile(model) if "compile" in name else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (args.batch_size,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step():
        with autocast():
            loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    variants = ["fp32", "fp32 channels_last", "bf16 autocast", "bf16 autocast channels_last"]
    if args.compile:
        variants += ["fp32 compile", "fp32 channels_last compile"]
    print("== training step: memory format, precision, torch.compile ==")
    print(describe_machine())
    print(f"setup: {args.backbone} + gap, {args.image_size} px, batch {args.batch_size}, {args.device}, "
          f"{args.steps} steps x {args.rounds} rounds per variant")
    steps = {}
    for name in variants:
        started = time.perf_counter()
        steps[name] = make_variant(name, args, device)
        steps[name]()  # warm-up (and compilation)
        steps[name]()
        print(f"  prepared {name} ({time.perf_counter() - started:.1f} s incl. warm-up)", flush=True)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            started = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            times[name].append((time.perf_counter() - started) / args.steps)
    base = sorted(times["fp32"])[len(times["fp32"]) // 2]
    print("results (median step time; ratio = speed relative to fp32 NCHW, above 1.00x is faster):")
    for name in variants:
        t = sorted(times[name])[len(times[name]) // 2]
        print(f"  {name:38s} {args.batch_size / t:7.1f} img/s  {base / t:5.2f}x")


if __name__ == "__main__":
    main()
