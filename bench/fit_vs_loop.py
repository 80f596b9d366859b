"""``tlkit fit`` against the hand-written PyTorch loop a competent user would write.

Both train efficientnet_lite0 with the same packaged ImageNet weights and a global-average-pooling
classifier, all layers (``--tune full``), on the same generated image folder, with the same image
size, batch size, epochs, AdamW + cosine schedule and validation after every epoch. The reference
is ``bench/_handwritten_loop.py`` (plain PyTorch + timm + torchvision, nothing of tlkit).

Measured, each as a ratio tlkit / hand-written loop in the same run:

* whole process: wall time of ``tlkit fit ...`` against ``python bench/_handwritten_loop.py ...``
  as subprocesses (imports, data scan, model build, training, run-directory outputs: everything);
* per epoch: the time between the ends of consecutive epochs (train + validation + every per-epoch
  cost such as checkpoints, metrics.json and the curves plot). tlkit's epoch ends are read from
  its run directory's metrics.json as it is rewritten; the loop prints its own.

Runs are interleaved A B B A (``--repeats 2``) to damp drift in machine load. Target: <= 1.05x.

    python bench/fit_vs_loop.py [--per-class 60] [--image-size 128] [--epochs 4] [--repeats 2]
    python bench/fit_vs_loop.py --fit-args "--no-channels-last"   # same memory format as the plain loop
    python bench/fit_vs_loop.py --loop-channels-last              # the loop in channels_last too
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (BENCH_DIR, EpochWatcher, add_checkout_option, apply_checkout_option,  # noqa: E402
                     describe_machine, epoch_seconds, make_data, median, quiet_env, ratio_line, run_timed,
                     temp_dir, tlkit_command)

TARGET = 1.05


def run_tlkit(data: Path, out: Path, args, home: Path):
    cmd = [*tlkit_command(), "fit", str(data), "--out", str(out), "--backbone", "efficientnet_lite0",
           "--head", "gap", "--tune", "full", "--augment", "none", "--image-size", str(args.image_size),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           *shlex.split(args.fit_args)]
    with EpochWatcher(out / "metrics.json") as watcher:
        seconds, result = run_timed(cmd, env=quiet_env(TLKIT_HOME=home))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    last = metrics["epochs"][-1]
    return seconds, epoch_seconds(watcher.times), last["val_accuracy"]


def run_loop(data: Path, out: Path, args):
    cmd = [sys.executable, str(BENCH_DIR / "_handwritten_loop.py"), str(data), "--out", str(out),
           "--image-size", str(args.image_size), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    if args.loop_workers is not None:
        cmd += ["--num-workers", str(args.loop_workers)]
    if args.loop_channels_last:
        cmd.append("--channels-last")
    seconds, result = run_timed(cmd, env=quiet_env())
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    ends = {r["epoch"]: r["end"] for r in records}
    return seconds, epoch_seconds(ends), records[-1]["val_accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="images per class (4 classes, 3/4 train)")
    parser.add_argument("--data-size", type=int, default=160, help="pixel size of the generated images")
    parser.add_argument("--image-size", type=int, default=128, help="training image size (both sides)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs, ordered A B B A A B ...")
    parser.add_argument("--fit-args", default="", help="extra options for tlkit fit, e.g. '--channels-last'")
    parser.add_argument("--loop-workers", type=int, default=None,
                        help="DataLoader workers of the hand-written loop (default: its own min(4, CPUs-1))")
    parser.add_argument("--loop-channels-last", action="store_true",
                        help="the hand-written loop uses channels_last too (tlkit's default on CPU and CUDA)")
    add_checkout_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    apply_checkout_option(args)

    print("== tlkit fit vs the hand-written PyTorch loop ==")
    print(describe_machine())
    print(f"setup: efficientnet_lite0 pretrained + gap head, --tune full, {args.per_class} images/class x 4 "
          f"classes ({args.data_size} px PNG, resized to {args.image_size}), batch {args.batch_size}, "
          f"{args.epochs} epochs, AdamW lr {args.lr}; tlkit fit extra args: {args.fit_args or '(none)'}; "
          f"loop: {'channels_last' if args.loop_channels_last else 'NCHW'}")
    with temp_dir("tlkit-bench-fit-", keep=args.keep) as work:
        data = make_data(work / "data", per_class=args.per_class, image_size=args.data_size)
        results = {"tlkit": [], "loop": []}
        order = []
        for i in range(args.repeats):
            order += ["tlkit", "loop"] if i % 2 == 0 else ["loop", "tlkit"]
        for n, which in enumerate(order):
            out = work / f"run{n}-{which}"
            if which == "tlkit":
                seconds, epochs, acc = run_tlkit(data, out, args, home=work / f"home{n}")
            else:
                seconds, epochs, acc = run_loop(data, out, args)
            results[which].append((seconds, epochs))
            print(f"  run {n + 1}/{len(order)} {which:5s}: {seconds:6.2f} s whole process, epochs "
                  f"{', '.join(f'{e:.2f}' for e in epochs)} s, final val accuracy {acc:.3f}", flush=True)

    process = {k: median(s for s, _ in v) for k, v in results.items()}
    per_epoch = {k: median(e for _, es in v for e in es) for k, v in results.items()}
    print("results (medians; ratio = tlkit / hand-written loop):")
    print("  " + ratio_line("whole process", process["tlkit"], process["loop"], TARGET))
    print("  " + ratio_line("per epoch    ", per_epoch["tlkit"], per_epoch["loop"], TARGET))
    # Other programs on the machine only ever add time, so the fastest run of each is the least disturbed.
    fastest = {k: min(s for s, _ in v) for k, v in results.items()}
    print("  " + ratio_line("whole process, fastest run of each", fastest["tlkit"], fastest["loop"]))


if __name__ == "__main__":
    main()
