"""Fast feature extraction: ``tlkit fit --tune head`` for 8 epochs against 1 epoch.

With a frozen backbone and a deterministic augmentation (``--augment none``) tlkit runs the backbone
once per image and trains the head on the stored features, so more epochs should cost little more
than one. Every run gets a fresh ``TLKIT_HOME`` (an empty feature cache), so each pays for one
feature extraction. Measured, as ratios of whole-process wall times in the same run:

* with the feature cache (the default): 8 epochs / 1 epoch. Target: <= 1.3x;
* with ``--no-feature-cache`` (the backbone runs on every image in every epoch): 8 / 1, about 8x
  on a CPU -- the reference that shows what the cache saves.

Runs are interleaved 1 8 8 1 (``--repeats 2``).

    python bench/feature_extraction.py [--per-class 150] [--image-size 128] [--repeats 2] [--skip-no-cache]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (add_checkout_option, apply_checkout_option, describe_machine, make_data,  # noqa: E402
                     median, quiet_env, ratio_line, run_timed, temp_dir, tlkit_command)

TARGET = 1.3


def fit_seconds(data: Path, work: Path, tag: str, epochs: int, args, *extra: str) -> float:
    out = work / f"run-{tag}"
    cmd = [*tlkit_command(), "fit", str(data), "--out", str(out), "--backbone", "efficientnet_lite0",
           "--head", "gap", "--tune", "head", "--augment", "none", "--image-size", str(args.image_size),
           "--epochs", str(epochs), "--batch-size", str(args.batch_size), *extra]
    seconds, _ = run_timed(cmd, env=quiet_env(TLKIT_HOME=work / f"home-{tag}"))  # fresh, empty cache
    return seconds


def measure(data, work, args, name, *extra):
    order = []
    for i in range(args.repeats):
        order += [1, args.epochs] if i % 2 == 0 else [args.epochs, 1]
    times = {1: [], args.epochs: []}
    for n, epochs in enumerate(order):
        seconds = fit_seconds(data, work, f"{name}-{n}-{epochs}", epochs, args, *extra)
        times[epochs].append(seconds)
        print(f"  {name}: {epochs} epoch(s): {seconds:.2f} s", flush=True)
    return median(times[args.epochs]), median(times[1]), min(times[args.epochs]), min(times[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150, help="images per class (4 classes)")
    parser.add_argument("--data-size", type=int, default=160, help="pixel size of the generated images")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8, help="the long run (compared with 1 epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs with the cache")
    parser.add_argument("--no-cache-repeats", type=int, default=1, help="pairs of runs without the cache")
    parser.add_argument("--skip-no-cache", action="store_true", help="skip the slow --no-feature-cache pair")
    add_checkout_option(parser)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    apply_checkout_option(args)

    print(f"== tlkit fit --tune head: {args.epochs} epochs vs 1 epoch ==")
    print(describe_machine())
    print(f"setup: efficientnet_lite0 pretrained + gap head, --augment none, {args.per_class} images/class x 4 "
          f"classes ({args.data_size} px PNG -> {args.image_size} px), batch {args.batch_size}; "
          f"fresh TLKIT_HOME (empty feature cache) per run")
    with temp_dir("tlkit-bench-features-", keep=args.keep) as work:
        data = make_data(work / "data", per_class=args.per_class, image_size=args.data_size)
        cached = measure(data, work, args, "cache")
        uncached = None
        if not args.skip_no_cache:
            args.repeats = args.no_cache_repeats
            uncached = measure(data, work, args, "no-cache", "--no-feature-cache")
    print(f"results (medians; ratio = {args.epochs} epochs / 1 epoch, whole process):")
    print("  " + ratio_line("feature cache (default)", *cached[:2], TARGET))
    print("  " + ratio_line("feature cache, fastest run of each", *cached[2:]))
    if uncached:
        print("  " + ratio_line("--no-feature-cache     ", *uncached[:2]))
        print(f"  the cache makes the {args.epochs}-epoch run {uncached[0] / cached[0]:.2f}x faster")


if __name__ == "__main__":
    main()
