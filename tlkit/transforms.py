"""Train and evaluation transforms: an augmentation policy, then tensor conversion and normalisation."""

from __future__ import annotations

import torch
from torchvision import transforms
from torchvision.transforms import functional as F

from tlkit.plugins import get_registry


class ToFloatTensor:
    """PIL image or uint8/float tensor -> float32 tensor in [0, 1] (policies may return either)."""

    def __call__(self, image):
        tensor = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
        return F.convert_image_dtype(tensor, torch.float32)

    def __repr__(self):
        return "ToFloatTensor()"


def _finish(image_size, mean, std):
    return [ToFloatTensor(), transforms.Resize((image_size, image_size), antialias=True),
            transforms.Normalize(mean, std)]


def train_transform(policy: str, image_size: int, mean, std, **options):
    """The registered augmentation ``policy`` followed by tensor conversion and normalisation."""
    augment = get_registry("augmentations").get(policy).create(image_size=image_size, **options)
    return transforms.Compose([augment, *_finish(image_size, mean, std)])


def eval_transform(image_size: int, mean, std):
    """Deterministic resize, tensor conversion and normalisation."""
    return transforms.Compose([transforms.Resize((image_size, image_size), antialias=True),
                               *_finish(image_size, mean, std)])


def is_deterministic(policy: str) -> bool:
    """Whether a policy always gives the same output for an image (so features can be cached)."""
    return bool(getattr(get_registry("augmentations").get(policy).factory, "deterministic", False))
