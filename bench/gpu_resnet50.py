"""ResNet50 fine-tuning images/s on a GPU through ``tlkit fit``'s machinery (prepared; run it on a GPU).

timm publishes 826 img/s for ResNet50 training on an RTX 3090 with mixed precision (batch 256,
224 px, NCHW, PyTorch AMP; timm's ``benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv``). This script
measures, in one go and in the same run:

1. tlkit: ``build_model("resnet50", "gap")`` + tlkit's ``Classifier`` (``--tune full``: AdamW with two
   parameter groups, cosine schedule, cross-entropy, per-step logging) trained by a Lightning
   ``Trainer`` configured as ``tlkit fit`` configures it on a GPU (``bf16-mixed``, channels_last,
   cuDNN benchmark), on a synthetic batch that already lies on the GPU (no input pipeline);
2. the bare reference: the same model, optimiser, precision and memory format in a plain loop;
3. with ``--fit``: the real ``tlkit fit`` on a generated 224 px image folder (input pipeline
   included), images/s per epoch from its epoch times.

It prints images/s, the ratio tlkit / bare loop (target: >= 0.95) and each against timm's 826 img/s
(different GPU: read that one as context, not as a pass/fail).

    python bench/gpu_resnet50.py                       # about 2-3 minutes on one GPU
    python bench/gpu_resnet50.py --fit --fit-images 4000
    python bench/gpu_resnet50.py --device cpu --batch-size 8 --image-size 64 --steps 3 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (EpochWatcher, describe_machine, epoch_seconds, make_data, median, quiet_env,  # noqa: E402
                     run_timed, temp_dir, tlkit_command)

TIMM_RTX3090_AMP_IMG_S = 826.0


def synthetic_batches(batch_size, image_size, num_classes, device, total):
    """An iterable dataset that yields one ready batch ``total`` times, already on ``device``."""
    import torch
    from torch.utils.data import IterableDataset

    class Synthetic(IterableDataset):
        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
            self.y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)

        def __iter__(self):
            for _ in range(total):
                yield self.x, self.y

        def __len__(self):
            return total

    return Synthetic()


class StepTimer:
    """A Lightning callback: wall time between the end of step ``warmup`` and the last step."""

    def __init__(self, warmup):
        import pytorch_lightning as pl

        timer = self

        class _Callback(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step in (warmup, timer.last_step):
                    _sync(pl_module.device)
                    timer.marks[trainer.global_step] = time.perf_counter()

        self.warmup = warmup
        self.last_step = None
        self.marks = {}
        self.callback = _Callback()


def _sync(device):
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def tlkit_machinery(args, device) -> float:
    """Images/s of tlkit's Classifier + Trainer as ``tlkit fit`` sets them up on a GPU."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader

    from tlkit.lightning_module import Classifier
    from tlkit.models import build_model
    from tlkit.train import _quiet_lightning

    _quiet_lightning()
    pl.seed_everything(0, verbose=False)
    model = build_model("resnet50", "gap", num_classes=args.num_classes, image_size=args.image_size,
                        pretrained=False)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = Classifier(model, tune="full", lr=1e-3, epochs=1, channels_last=args.channels_last)
    total = args.warmup + args.steps
    timer = StepTimer(args.warmup)
    timer.last_step = total
    loader = DataLoader(synthetic_batches(args.batch_size, args.image_size, args.num_classes, device, total),
                        batch_size=None)
    from pytorch_lightning.callbacks import TQDMProgressBar

    callbacks = [timer.callback]
    if args.progress:  # as tlkit fit without --quiet: the bar reads the logged loss every step
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision=args.precision, max_steps=total, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=args.progress,
                         enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
                         limit_val_batches=0, benchmark=device.type == "cuda", callbacks=callbacks)
    trainer.fit(module, train_dataloaders=loader)
    seconds = timer.marks[total] - timer.marks[args.warmup]
    return args.steps * args.batch_size / seconds


def bare_loop(args, device) -> float:
    """Images/s of the same model, optimiser, precision and memory format in a plain loop."""
    import torch
    import torch.nn.functional as F

    from tlkit.models import build_model

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = build_model("resnet50", "gap", num_classes=args.num_classes, image_size=args.image_size,
                        pretrained=False).to(device).train()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    data = synthetic_batches(args.batch_size, args.image_size, args.num_classes, device, 1)
    x, y = data.x.contiguous(memory_format=memory_format), data.y
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def real_fit(args) -> float:
    """Images/s per epoch of ``tlkit fit --backbone resnet50 --tune full`` on a generated folder."""
    per_class = max(2, args.fit_images // 4)
    with temp_dir("tlkit-bench-gpu-") as work:
        data = make_data(work / "data", per_class=per_class, image_size=args.image_size)
        train_images = sum(1 for _ in (data / "train").rglob("*.png"))
        val_images = sum(1 for _ in (data / "val").rglob("*.png"))
        out = work / "run"
        cmd = [*tlkit_command(), "fit", str(data), "--out", str(out), "--backbone", "resnet50", "--head", "gap",
               "--no-pretrained", "--tune", "full", "--epochs", str(args.fit_epochs), "--batch-size",
               str(args.batch_size), "--image-size", str(args.image_size), "--precision", args.precision,
               "--channels-last" if args.channels_last else "--no-channels-last", "--quiet"]
        with EpochWatcher(out / "metrics.json") as watcher:
            seconds, _ = run_timed(cmd, env=quiet_env(TLKIT_HOME=work / "home"))
        epochs = epoch_seconds(watcher.times)
    print(f"  tlkit fit: {seconds:.1f} s whole process, epochs {', '.join(f'{e:.2f}' for e in epochs)} s "
          f"({train_images} train + {val_images} val images per epoch)")
    return (train_images + val_images) / median(epochs) if epochs else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--precision", default="bf16-mixed", help="bf16-mixed, 16-mixed or 32-true")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of tlkit and the bare loop")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show Lightning's progress bar, as tlkit fit does without --quiet (it reads the "
                             "loss from the GPU every step; --no-progress measures without it)")
    parser.add_argument("--fit", action="store_true", help="also run the real tlkit fit on generated images")
    parser.add_argument("--fit-images", type=int, default=4000)
    parser.add_argument("--fit-epochs", type=int, default=3)
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run this on a GPU machine (or --device cpu for a smoke test)")
    print("== ResNet50 training images/s through tlkit's machinery ==")
    print(describe_machine())
    print(f"setup: resnet50 + gap, {args.num_classes} classes, {args.image_size} px, batch {args.batch_size}, "
          f"{args.precision}, {'channels_last' if args.channels_last else 'NCHW'}, {args.warmup} warm-up + "
          f"{args.steps} timed steps, {args.rounds} rounds")
    results = {"tlkit": [], "bare": []}
    for _ in range(args.rounds):
        results["tlkit"].append(tlkit_machinery(args, device))
        print(f"  tlkit machinery: {results['tlkit'][-1]:.1f} img/s", flush=True)
        results["bare"].append(bare_loop(args, device))
        print(f"  bare loop:       {results['bare'][-1]:.1f} img/s", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ours, bare = median(results["tlkit"]), median(results["bare"])
    print("results (median img/s):")
    print(f"  tlkit machinery {ours:8.1f} img/s   {ours / bare:.3f}x the bare loop (target >= 0.95): "
          f"{'HOLDS' if ours / bare >= 0.95 else 'MISSED'}")
    print(f"  bare loop       {bare:8.1f} img/s")
    print(f"  vs timm's published {TIMM_RTX3090_AMP_IMG_S:.0f} img/s (RTX 3090, AMP): tlkit "
          f"{ours / TIMM_RTX3090_AMP_IMG_S:.2f}x, bare {bare / TIMM_RTX3090_AMP_IMG_S:.2f}x (different GPU)")
    if args.fit:
        ips = real_fit(args)
        print(f"  tlkit fit with its input pipeline: {ips:.1f} img/s per epoch (train + val), "
              f"{ips / bare:.2f}x the bare loop's training rate")


if __name__ == "__main__":
    main()
