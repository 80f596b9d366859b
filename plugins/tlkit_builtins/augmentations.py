"""Augmentation policies: the lecture's hand-tuned one and torchvision's learned/random policies.

Every policy resizes to ``image_size x image_size`` and returns a PIL image; tlkit appends the
tensor conversion and the backbone's normalisation.
"""

from tlkit import hookimpl


def _resize(image_size):
    from torchvision import transforms

    return transforms.Resize((image_size, image_size), antialias=True)


def no_augmentation(*, image_size: int):
    """Resize only (deterministic)."""
    return _resize(image_size)


def lecture(*, image_size: int, rotation: float = 40, scale=(0.8, 1.2), shear: float = 20,
            jitter: float = 0.2, flip: bool = True):
    """The lecture's policy: rotation 40, resized crop 0.8-1.2, flip, shear 20, colour jitter 0.2."""
    from torchvision import transforms

    steps = [_resize(image_size), transforms.RandomRotation(rotation),
             transforms.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True)]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.RandomAffine(degrees=0, shear=shear),
              transforms.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)]
    return transforms.Compose(steps)


def randaugment(*, image_size: int, num_ops: int = 2, magnitude: int = 9):
    """torchvision RandAugment (Cubuk et al. 2020) after resizing."""
    from torchvision import transforms

    return transforms.Compose([_resize(image_size), transforms.RandAugment(num_ops=num_ops, magnitude=magnitude)])


def trivialaugment(*, image_size: int):
    """torchvision TrivialAugmentWide (Mueller and Hutter 2021) after resizing."""
    from torchvision import transforms

    return transforms.Compose([_resize(image_size), transforms.TrivialAugmentWide()])


def autoaugment(*, image_size: int, policy: str = "imagenet"):
    """torchvision AutoAugment with the ImageNet (or ``cifar10``/``svhn``) policy after resizing."""
    from torchvision import transforms

    policies = {p.value: p for p in transforms.AutoAugmentPolicy}
    if policy not in policies:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(policies)}")
    return transforms.Compose([_resize(image_size), transforms.AutoAugment(policies[policy])])


# The model factory uses this to know that features of a frozen backbone can be cached.
no_augmentation.deterministic = True


@hookimpl
def register_augmentations(register):
    register("none", no_augmentation, aliases=("resize",))
    register("lecture", lecture, aliases=("classic",))
    register("randaugment", randaugment)
    register("trivialaugment", trivialaugment, aliases=("trivialaugmentwide",))
    register("autoaugment", autoaugment)
