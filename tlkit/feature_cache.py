"""Fast feature extraction: run a frozen backbone once per image and train the head on the result.

With ``--tune head`` and a deterministic augmentation policy every epoch would compute the same
backbone features again. They are computed once, stored (float16) under
``$TLKIT_HOME/feature_cache/<key>.safetensors`` and reused by later epochs, by ``--resume`` and by
later runs. The key covers everything the features depend on: the backbone's name, options and
weights (hashed), the image size, the normalisation, the transform, and every file's path, size and
modification time, so a change to any of them computes new features instead of reusing stale ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from tlkit import __version__
from tlkit.data import ImageDataset


def cache_dir() -> Path:
    home = os.environ.get("TLKIT_HOME") or os.path.join("~", ".cache", "tlkit")
    return Path(home).expanduser() / "feature_cache"


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model, samples, transform) -> str:
    """A key that changes whenever the features of ``samples`` could change."""
    files = []
    for sample in samples:
        stat = os.stat(sample.path)
        files.append((os.path.abspath(sample.path), stat.st_size, stat.st_mtime_ns, sample.label))
    document = {
        "tlkit": __version__,
        "backbone": model.backbone_name,
        "options": model.backbone_options,
        "weights": weights_digest(model.backbone),
        "image_size": model.image_size,
        "mean": model.mean,
        "std": model.std,
        "transform": repr(transform),
        "files": files,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def extract_features(backbone, samples, transform, *, batch_size=32, num_workers=0, device="cpu",
                     desc="features", progress=True):
    """Backbone feature maps of ``samples`` as a float16 tensor ``(N, C, h, w)``, plus labels."""
    from tqdm.auto import tqdm

    cuda = torch.device(device).type == "cuda"
    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=cuda)
    was_training = backbone.training
    backbone.eval().to(device)
    chunks, labels = [], []
    try:
        for images, targets in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, leave=False):
            chunks.append(backbone(images.to(device, non_blocking=cuda)).to("cpu", torch.float16))
            labels.append(targets)
    finally:
        backbone.train(was_training)
    # contiguous: a channels_last backbone returns channels_last maps; the cache stores plain ones
    return torch.cat(chunks).contiguous(), torch.cat(labels).long()


def cached_features(model, samples, transform, *, split: str, batch_size=32, num_workers=0,
                    device="cpu", progress=True, directory=None):
    """Features and labels of ``samples``, from the cache when the key matches, else computed and stored."""
    from safetensors.torch import load_file, save_file

    directory = Path(directory) if directory else cache_dir()
    path = directory / f"{cache_key(model, samples, transform)}.safetensors"
    if path.is_file():
        try:
            stored = load_file(str(path))
            return stored["features"], stored["labels"], True
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
            path.unlink(missing_ok=True)
    features, labels = extract_features(model.backbone, samples, transform, batch_size=batch_size,
                                        num_workers=num_workers, device=device,
                                        desc=f"{split} features", progress=progress)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs speed
        print(f"tlkit: warning: cannot store features in {directory}: {exc}", file=sys.stderr)
    return features, labels, False


class FeatureDataModule(pl.LightningDataModule):
    """Batches of cached backbone features for training a head."""

    def __init__(self, train, val, *, batch_size=32):
        super().__init__()
        self.train_set = TensorDataset(*train)
        self.val_set = TensorDataset(*val)
        self.batch_size = int(batch_size)

    def train_dataloader(self):
        n = len(self.train_set)
        # a final batch of one sample breaks BatchNorm in a head
        drop_last = n > 1 and n % self.batch_size == 1
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=drop_last)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)
