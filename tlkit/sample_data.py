"""Built-in sample data: a small image folder of filled shapes, used by ``tlkit fit`` without DATA_DIR.

It is generated (no download) and stands in for a user's own folder: the same ``train/<class>/`` +
``val/<class>/`` layout, PNG files, four classes. The task is easy for a pretrained backbone and
learnable for a tiny CNN, but not trivial: shapes vary in position, size, rotation and colour, the
backgrounds vary, and small distractor marks appear that are not the class shape.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tlkit.errors import TlkitError

__all__ = ["SAMPLE_CLASSES", "SAMPLE_DATA_VERSION", "make_sample_dataset", "sample_data_dir"]

SAMPLE_CLASSES = ("circle", "square", "triangle", "star")

#: Bump whenever the cached default copy would change (the generator or the two sizes below), so
#: cached copies are regenerated; the README names the folder (``shapes-v1``), so update it too.
SAMPLE_DATA_VERSION = "1"
#: Size of the cached default copy that ``tlkit fit`` uses without DATA_DIR.
SAMPLE_PER_CLASS = 60
SAMPLE_IMAGE_SIZE = 64

_SUPERSAMPLE = 4  # shapes are drawn 4x larger and scaled down, for smooth (anti-aliased) edges
_MIN_CONTRAST = 80.0  # luminance difference (0-255) between a shape and the background under it

_README = """\
tlkit sample data (generator version {version})

A generated stand-in for your own image folder: {n_classes} classes of filled shapes
({classes}), {per_class} images per class, {size}x{size} pixels, seed {seed}.
Layout: train/<class>/*.png and val/<class>/*.png ({n_train} + {n_val} images per class).

Each image has a random background (a solid colour, a two-colour gradient or light noise),
one shape of a contrasting random colour at a random position, size (about 20-60% of the
image) and rotation, and up to two small distractor marks that are not the class shape.

Created by tlkit.sample_data.make_sample_dataset; safe to delete (it is regenerated on use).
"""


def make_sample_dataset(
    root: str | os.PathLike,
    *,
    per_class: int = 60,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.25,
) -> Path:
    """Write the shapes data set to ``root`` and return ``root`` as a Path.

    ``root`` gets ``train/<class>/<class>_NNN.png`` and ``val/<class>/<class>_NNN.png`` for each of
    :data:`SAMPLE_CLASSES` (``round(per_class * val_fraction)`` val images per class, at least one)
    and a ``README.txt``. The same arguments always give byte-identical files.
    """
    if per_class < 2:
        raise TlkitError(f"per_class must be at least 2 (one train and one val image), got {per_class}")
    if image_size < 16:
        raise TlkitError(f"image_size must be at least 16 pixels for visible shapes, got {image_size}")
    if not 0 < val_fraction < 1:
        raise TlkitError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = min(per_class - 1, max(1, round(per_class * val_fraction)))
    n_train = per_class - n_val
    digits = max(3, len(str(per_class - 1)))

    root = Path(root)
    for class_index, name in enumerate(SAMPLE_CLASSES):
        for split in ("train", "val"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # One generator per image, so each image depends only on (seed, class, index).
            rng = np.random.default_rng([seed, class_index, i])
            image = _render(name, image_size, rng)
            split = "train" if i < n_train else "val"
            image.save(root / split / name / f"{name}_{i:0{digits}d}.png", format="PNG", compress_level=6)
    (root / "README.txt").write_text(
        _README.format(
            version=SAMPLE_DATA_VERSION,
            n_classes=len(SAMPLE_CLASSES),
            classes=", ".join(SAMPLE_CLASSES),
            per_class=per_class,
            size=image_size,
            seed=seed,
            n_train=n_train,
            n_val=n_val,
        ),
        encoding="utf-8",
    )
    return root


def sample_data_dir(cache_root: str | os.PathLike | None = None) -> Path:
    """Return the folder of the default sample data, generating it on first use.

    The data live under ``cache_root``, or else ``$TLKIT_HOME/sample_data`` (``TLKIT_HOME`` defaults
    to ``~/.cache/tlkit``), in ``shapes-v<SAMPLE_DATA_VERSION>``: :data:`SAMPLE_PER_CLASS` images per
    class of :data:`SAMPLE_IMAGE_SIZE` pixels. A new copy is built in a temporary folder and renamed
    into place, so a concurrent process never sees half of it.
    """
    if cache_root is None:
        home = os.environ.get("TLKIT_HOME") or os.path.join("~", ".cache", "tlkit")
        base = Path(home).expanduser() / "sample_data"
    else:
        base = Path(cache_root).expanduser()
    target = base / f"shapes-v{SAMPLE_DATA_VERSION}"
    if target.is_dir():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-shapes-", dir=base))
    except OSError as e:
        raise TlkitError(
            f"cannot write the sample data to {base}: {e.strerror or e}; set TLKIT_HOME to a writable folder"
        ) from e
    try:
        make_sample_dataset(tmp, per_class=SAMPLE_PER_CLASS, image_size=SAMPLE_IMAGE_SIZE)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real failure
                raise
    except OSError as e:
        raise TlkitError(
            f"cannot write the sample data to {base}: {e.strerror or e}; set TLKIT_HOME to a writable folder"
        ) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- drawing -----------------------------------------------------------------------------------


def _render(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``kind`` at ``size`` x ``size`` pixels, all randomness from ``rng``."""
    background = _background(size, rng)
    out = background.copy()

    for _ in range(int(rng.integers(0, 3))):
        colour = rng.integers(0, 256, 3).astype(np.float64)
        out = _paint(out, _distractor_mask(size, rng), colour)

    scale = rng.uniform(0.2, 0.6)  # the shape's outer diameter as a fraction of the image side
    radius = scale * size / 2
    margin = radius + 1
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    angle = rng.uniform(0, 2 * math.pi)
    mask = _shape_mask(kind, size, cx, cy, radius, angle)
    colour = _contrasting_colour(background, mask, rng)
    out = _paint(out, mask, colour)
    return Image.fromarray(np.rint(out).astype(np.uint8))


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    base = rng.integers(0, 256, 3).astype(np.float64)
    if kind == 0:  # solid colour
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 1:  # linear gradient; its colours stay close so one shape colour can contrast with both
        other = np.clip(base + rng.integers(-90, 91, 3), 0, 255)
        theta = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        t = xs * math.cos(theta) + ys * math.sin(theta)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        return base * (1 - t[..., None]) + other * t[..., None]
    noise = rng.normal(0.0, 12.0, (size, size, 3))  # light noise on a solid colour
    return np.clip(base + noise, 0, 255)


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Coverage in [0, 1] of a filled shape with outer radius ``radius`` centred at (cx, cy)."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    X, Y, R = cx * s, cy * s, radius * s
    if kind == "circle":
        draw.ellipse([X - R, Y - R, X + R, Y + R], fill=255)
    else:
        if kind == "square":
            radii = [R] * 4
        elif kind == "triangle":
            radii = [R] * 3
        elif kind == "star":
            radii = [R, R * 0.42] * 5  # alternate outer and inner points
        else:
            raise ValueError(f"unknown sample shape {kind!r}; expected one of {SAMPLE_CLASSES}")
        n = len(radii)
        points = [
            (X + r * math.cos(angle + 2 * math.pi * k / n), Y + r * math.sin(angle + 2 * math.pi * k / n))
            for k, r in enumerate(radii)
        ]
        draw.polygon(points, fill=255)
    return _downsample(canvas, size)


def _distractor_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A small mark (a short line or a thin ellipse) far smaller than any class shape."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = rng.uniform(0, size * s, 2)
    if rng.random() < 0.5:
        length = rng.uniform(0.08, 0.15) * size * s
        theta = rng.uniform(0, 2 * math.pi)
        end = (x + length * math.cos(theta), y + length * math.sin(theta))
        draw.line([(x, y), end], fill=255, width=max(1, round(rng.uniform(0.6, 1.5) * s)))
    else:
        # Elongated, so it cannot pass for a small circle.
        a = rng.uniform(0.03, 0.06) * size * s
        b = a * rng.uniform(0.25, 0.45)
        if rng.random() < 0.5:
            a, b = b, a
        draw.ellipse([x - a, y - b, x + a, y + b], fill=255)
    return _downsample(canvas, size)


def _downsample(canvas: Image.Image, size: int) -> np.ndarray:
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _contrasting_colour(background: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour that stands out against both the darkest and lightest background under the shape."""
    covered = mask > 0.5
    lum = _luminance(background[covered]) if covered.any() else _luminance(background.reshape(-1, 3))
    lo, hi = float(np.percentile(lum, 5)), float(np.percentile(lum, 95))
    for _ in range(32):
        colour = rng.integers(0, 256, 3).astype(np.float64)
        l = float(_luminance(colour))
        if l + _MIN_CONTRAST <= lo or l - _MIN_CONTRAST >= hi:
            return colour
    # Background in the middle of the range: black or white, whichever is further away.
    return np.zeros(3) if (lo + hi) / 2 > 127.5 else np.full(3, 255.0)


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    alpha = mask[..., None]
    return image * (1 - alpha) + colour * alpha
