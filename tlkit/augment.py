"""Previewing an augmentation policy: a grid of augmented samples of an image or a folder of images.

``tlkit augment`` calls :func:`augmentation_grid`; the demo calls :func:`augmentation_samples`. The
policy is the registered factory (``tlkit list augmentations``) exactly as training uses it, before
tensor conversion and normalisation, so what you see is what the model gets.
"""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

from tlkit.errors import TlkitError

MAX_SAMPLES = 256  # a bigger grid is unreadable and takes minutes to draw
TILE_INCHES = 1.6
GRID_DPI = 110
MAX_GROUP_COLUMNS = 8  # folder grids: at most this many tiles per row


def augmentation_samples(image, policy: str, n: int = 16, image_size: int = 224, seed: int = 0,
                         options: dict | None = None):
    """``n`` augmented versions of ``image`` (a PIL image or a path) as PIL RGB images.

    The same ``seed`` gives the same samples; the global random state is left as it was.
    """
    n = _check_n(n)
    transform = make_policy(policy, image_size, options)
    image = _as_image(image)
    with seeded(seed):
        return [_to_pil(transform(image)) for _ in range(n)]


def augmentation_grid(source, *, policy: str, n: int = 16, out, image_size: int = 224, seed: int = 0,
                      options: dict | None = None) -> Path:
    """Draw ``n`` augmented samples of ``source`` with ``policy`` and save the grid as ``out``.

    ``source`` is an image file, or a folder: then up to ``n`` of its images (recursively, in sorted
    order) are used, sample ``i`` coming from image ``i mod k``. The grid shows each original first,
    labelled, followed by its samples: one near-square grid for a single image, one row group per
    image for a folder. Unreadable files in a folder are skipped. Returns the path written.
    Raises TlkitError for a missing source, a folder without readable images, an unknown policy,
    options the policy rejects, or ``n`` outside 1..256.
    """
    n = _check_n(n)
    transform = make_policy(policy, image_size, options)
    paths = source_images(source, limit=n)
    originals, skipped = [], []
    for path in paths:
        try:
            originals.append((path, _as_image(path)))
        except TlkitError as exc:
            if len(paths) == 1 and Path(source).is_file():
                raise
            skipped.append(f"{path.name}: {exc}")
    if not originals:
        raise TlkitError(f"no readable image in {str(source)!r} ({'; '.join(skipped[:3])})")

    groups = [[] for _ in originals]
    with seeded(seed):
        for i in range(n):
            groups[i % len(originals)].append(_to_pil(transform(originals[i % len(originals)][1])))

    rows, columns = grid_layout(n, len(originals))
    from tlkit.figures import new_figure, save_figure

    figure = new_figure(columns * TILE_INCHES, rows * TILE_INCHES + 0.45)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for (ax, tile, title, bold) in _place(axes, originals, groups, image_size, len(originals) == 1):
        ax.imshow(tile)
        ax.set_title(title, fontsize=7, pad=2, fontweight="bold" if bold else "normal")
    what = Path(source).name or str(source)
    note = f", {len(skipped)} unreadable skipped" if skipped else ""
    figure.suptitle(f"policy {policy!r}: {n} samples of {what} at {image_size} px (seed {seed}{note})", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (rows * TILE_INCHES + 0.45)), pad=0.2, h_pad=0.8, w_pad=0.2)

    return save_figure(figure, out, dpi=GRID_DPI)


def grid_layout(n: int, images: int) -> tuple[int, int]:
    """``(rows, columns)`` of the grid for ``n`` samples of ``images`` source images (originals included).

    One image: a near-square grid of the original and its ``n`` samples. Several: groups of
    (original, its samples) side by side, as many groups per row as fit in 8 columns.
    """
    if images == 1:
        columns = math.ceil(math.sqrt(n + 1))
        return math.ceil((n + 1) / columns), columns
    width = 1 + math.ceil(n / images)
    per_row = max(1, MAX_GROUP_COLUMNS // width)
    return math.ceil(images / per_row), width * per_row


def _place(axes, originals, groups, image_size, single):
    """Yield ``(ax, tile, title, bold)`` in grid order."""
    flat = list(axes.flat)
    if single:
        path, image = originals[0]
        tiles = [(_preview(image, image_size), "original", True)]
        tiles += [(sample, f"#{i + 1}", False) for i, sample in enumerate(groups[0])]
        for ax, (tile, title, bold) in zip(flat, tiles):
            yield ax, tile, title, bold
        return
    rows, columns = axes.shape
    width = 1 + max(len(g) for g in groups)
    per_row = columns // width
    for k, ((path, image), samples) in enumerate(zip(originals, groups)):
        row, start = divmod(k, per_row)
        cells = axes[row, start * width:(start + 1) * width]
        yield cells[0], _preview(image, image_size), _short(path.name), True
        for j, sample in enumerate(samples):
            # sample j of image k is sample number k + j * len(originals) overall
            yield cells[j + 1], sample, f"#{k + j * len(originals) + 1}", False


def source_images(source, *, limit: int) -> list[Path]:
    """The image file ``source``, or up to ``limit`` image files under the folder ``source``."""
    from tlkit.images import is_image_file

    path = Path(source)
    if not path.exists():
        raise TlkitError(f"{str(source)!r} does not exist; pass an image file or a folder of images")
    if path.is_file():
        return [path]
    found = sorted((p for p in path.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: str(p).lower())
    if not found:
        from tlkit.images import IMAGE_EXTENSIONS

        raise TlkitError(f"folder {str(source)!r} holds no image files (looked for "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)")
    return found[:limit]


def make_policy(policy: str, image_size: int, options: dict | None = None):
    """The registered augmentation ``policy`` built for ``image_size`` with ``options``."""
    from tlkit.plugins import get_registry

    entry = get_registry("augmentations").get(policy)
    image_size = int(image_size)
    if image_size < 8:
        raise TlkitError(f"image size must be at least 8 px, got {image_size}")
    options = dict(options or {})
    try:
        return entry.create(image_size=image_size, **options)
    except TypeError as exc:
        raise TlkitError(f"augmentation policy {entry.name!r} rejected its options {sorted(options)}: {exc}") from exc
    except ValueError as exc:
        raise TlkitError(f"augmentation policy {entry.name!r}: {exc}") from exc


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's and Python's random generators for the block, then put their states back."""
    import torch

    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        random.seed(int(seed))
        try:
            yield
        finally:
            random.setstate(state)


def _check_n(n) -> int:
    n = int(n)
    if not 1 <= n <= MAX_SAMPLES:
        raise TlkitError(f"the number of samples must be between 1 and {MAX_SAMPLES}, got {n}")
    return n


def _as_image(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from tlkit.images import load_rgb

    return load_rgb(image)


def _to_pil(sample):
    """A policy may return a PIL image or a tensor (uint8, or float in [0, 1]); make it PIL RGB."""
    from PIL import Image

    if isinstance(sample, Image.Image):
        return sample.convert("RGB")
    import torch
    from torchvision.transforms.functional import to_pil_image

    if isinstance(sample, torch.Tensor):
        if sample.is_floating_point():
            sample = sample.clamp(0, 1)
        return to_pil_image(sample).convert("RGB")
    raise TlkitError(f"the augmentation policy returned a {type(sample).__name__}; policies must return "
                     f"a PIL image or a tensor")


def _preview(image, image_size):
    """The original at the samples' size (resized as the policies resize), so that crops and zooms
    compare at a glance."""
    from torchvision.transforms.functional import resize

    return resize(image, [image_size, image_size], antialias=True)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
