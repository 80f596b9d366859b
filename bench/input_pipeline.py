"""The input pipeline against what the model consumes: the model must never wait for data.

Measured in the same run, at the same image size:

1. images/s of one process (one thread, as in a DataLoader worker) that decodes and transforms:
   tlkit's reader (PIL, EXIF, mode conversion) + tlkit's eval transform and train transforms
   (``none``, ``lecture``, ``randaugment``, ``trivialaugment``), and, as the alternative,
   ``torchvision.io.decode_image`` + tensor resize + normalisation;
2. images/s that tlkit's DataLoader delivers with 0, 1 and 2 workers (steady state, second pass);
3. images/s that efficientnet_lite0 consumes in training (forward + backward + AdamW step, batch
   ``--batch-size``, all torch threads, channels_last as ``tlkit fit`` trains), on random tensors;
4. a real training loop fed by the DataLoader with 0/1/2 workers: the share of time the model waited
   for the next batch (0% = it never waited).

Ratios printed: pipeline / model (above 1 means data comes faster than it is consumed).

    python bench/input_pipeline.py [--image-size 128] [--data-size 160] [--format png|jpg] [--steps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_data, temp_dir  # noqa: E402


def rate(fn, items, min_seconds=1.0, min_items=48) -> float:
    """Items per second of ``fn`` over ``items`` (cycled until ``min_seconds`` and ``min_items``)."""
    fn(items[0])  # warm-up (first-call imports, caches)
    started, n = time.perf_counter(), 0
    while True:
        fn(items[n % len(items)])
        n += 1
        elapsed = time.perf_counter() - started
        if n >= min_items and elapsed >= min_seconds:
            return n / elapsed


def single_process_rates(paths, args):
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    from tlkit.images import load_rgb
    from tlkit.transforms import eval_transform, train_transform

    size, mean, std = args.image_size, (0.5,) * 3, (0.5,) * 3
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    try:
        evaluation = eval_transform(size, mean, std)
        rows = [("decode only: tlkit.images.load_rgb (PIL)", lambda p: load_rgb(p)),
                ("load_rgb + tlkit eval transform", lambda p: evaluation(load_rgb(p)))]
        for policy in args.policies:
            transform = train_transform(policy, size, mean, std)
            rows.append((f"load_rgb + tlkit train transform '{policy}'", lambda p, t=transform: t(load_rgb(p))))

        def torchvision_io(p):
            image = decode_image(read_file(p), mode=ImageReadMode.RGB)
            image = TF.resize(image, [size, size], antialias=True)
            return TF.normalize(TF.to_dtype(image, torch.float32, scale=True), mean, std)

        rows.append(("torchvision.io.decode_image + v2 resize + normalize", torchvision_io))
        return [(name, rate(fn, paths)) for name, fn in rows]
    finally:
        torch.set_num_threads(previous_threads)


def loader_rate(samples, transform, batch_size, workers) -> float:
    """Images/s a tlkit ImageDataset DataLoader delivers (second pass: workers already running)."""
    from torch.utils.data import DataLoader

    from tlkit.data import ImageDataset

    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:  # first pass starts the workers
        pass
    started, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - started)


def model_and_optimizer(num_classes, channels_last=False):
    import torch
    import timm

    model = timm.create_model("efficientnet_lite0", num_classes=num_classes).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def model_rate(args, steps, channels_last=True) -> float:
    """Training images/s of efficientnet_lite0 on random tensors (all torch threads)."""
    import torch
    import torch.nn.functional as F

    model, optimizer = model_and_optimizer(4, channels_last)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (args.batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * args.batch_size / (time.perf_counter() - started)


def waiting_share(samples, transform, args, workers) -> tuple[float, float]:
    """Train with a real DataLoader; return (share of time spent waiting for batches, images/s)."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from tlkit.data import ImageDataset

    import torch

    model, optimizer = model_and_optimizer(4, channels_last=True)
    loader = DataLoader(ImageDataset(samples, transform), batch_size=args.batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0, drop_last=True)
    waited = computed = 0.0
    images = 0
    done = 0
    warm = 2  # the first steps include worker start-up and allocator warm-up
    while done < args.steps + warm:
        iterator = iter(loader)
        while done < args.steps + warm:
            t0 = time.perf_counter()
            try:
                x, y = next(iterator)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            t2 = time.perf_counter()
            if done >= warm:
                waited += t1 - t0
                computed += t2 - t1
                images += len(y)
            done += 1
    return waited / (waited + computed), images / (waited + computed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--data-size", type=int, default=160, help="pixel size of the stored images")
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--per-class", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="measured training steps per worker setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policies", nargs="+", default=["none", "lecture", "randaugment", "trivialaugment"])
    args = parser.parse_args()

    import torch

    from tlkit.data import scan_image_folder
    from tlkit.transforms import eval_transform, train_transform

    print("== input pipeline vs model consumption ==")
    print(describe_machine())
    print(f"setup: {args.data_size} px {args.format.upper()} images -> {args.image_size} px, batch {args.batch_size}, "
          f"efficientnet_lite0 training (fp32)")
    with temp_dir("tlkit-bench-input-") as work:
        data = make_data(work / "data", per_class=args.per_class, image_size=args.data_size)
        if args.format == "jpg":
            from PIL import Image

            for png in list(data.rglob("*.png")):
                Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
                png.unlink()
        scan = scan_image_folder(data, progress=False)
        samples = scan.splits["train"]
        paths = [s.path for s in samples]

        nchw_ips = model_rate(args, max(4, args.steps), channels_last=False)
        model_ips = model_rate(args, max(4, args.steps), channels_last=True)
        print(f"\nmodel: efficientnet_lite0 trains at {model_ips:.1f} img/s in channels_last (tlkit's default; "
              f"{nchw_ips:.1f} img/s in NCHW), {torch.get_num_threads()} threads; ratios below use the faster")

        print("\n1. one process, one thread (as one DataLoader worker) -- img/s and ratio pipeline/model:")
        for name, ips in single_process_rates(paths, args):
            print(f"   {name:58s} {ips:8.1f} img/s  {ips / model_ips:7.1f}x")

        evaluation = eval_transform(args.image_size, (0.5,) * 3, (0.5,) * 3)
        lecture = train_transform("lecture", args.image_size, (0.5,) * 3, (0.5,) * 3)
        print("\n2. tlkit DataLoader (ImageDataset, batch {}), steady state -- img/s and ratio pipeline/model:"
              .format(args.batch_size))
        for label, transform in (("eval transform", evaluation), ("'lecture' augmentation", lecture)):
            for workers in args.workers:
                ips = loader_rate(samples, transform, args.batch_size, workers)
                print(f"   {label:24s} {workers} worker(s): {ips:8.1f} img/s  {ips / model_ips:7.1f}x")

        print("\n3. training fed by the DataLoader ('lecture' augmentation): time the model waited for data")
        for workers in args.workers:
            share, ips = waiting_share(samples, lecture, args, workers)
            print(f"   {workers} worker(s): waited {share:6.1%} of the time, {ips:6.1f} img/s "
                  f"({ips / model_ips:.2f}x the model alone)")
    print("\nA pipeline/model ratio above 1 (and a waiting share near 0%) means the model never waits for data.")


if __name__ == "__main__":
    main()
