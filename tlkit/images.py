"""Robust image reading: any file Pillow can decode becomes a plain 8-bit RGB image, or a short reason.

Data folders collected from the wild hold CMYK JPEGs, 16-bit PNGs, transparent logos, phone photos
that rely on EXIF rotation, and files that were cut short while copying. Everything in tlkit reads
images through :func:`load_rgb` so that training, evaluation and prediction see the same pixels, and
data scans use :func:`check_image` so that bad files are skipped with a reason instead of crashing
a training run halfway through an epoch.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlkit.errors import TlkitError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "check_image",
    "is_image_file",
    "load_rgb",
]

#: Lower-case file extensions (with the dot) that tlkit treats as images. Matching is case-insensitive.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

# The reasons check_image returns; the scan's skipped-files record shows them to users.
REASON_EMPTY = "empty file"
REASON_NOT_IMAGE = "not an image"
REASON_CORRUPT = "truncated or corrupt image"
REASON_BOMB = "decompression bomb (over Pillow's pixel limit)"

# What Pillow's decoders raise on damaged data (rather than on an unreadable file).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class ImageError(TlkitError):
    """An image that cannot be read. ``reason`` is short ("truncated or corrupt image"); ``path`` is the file.

    It is a :class:`~tlkit.errors.TlkitError`, so the command line reports it in one line. The
    constructor accepts a single message too, because DataLoader workers re-create exceptions that way.
    """

    def __init__(self, reason: str, path: str | None = None):
        super().__init__(reason, path)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has one of :data:`IMAGE_EXTENSIONS` (any letter case); the content is not read."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def load_rgb(path_or_file: PathOrFile) -> Image.Image:
    """Read an image fully and return it as a new 8-bit ``"RGB"`` PIL image.

    ``path_or_file`` is a path or a binary file object (read from its current position). EXIF
    orientation is applied; transparency is composited on white; grey, palette, CMYK and other modes
    are converted; 16/32-bit integer grey is scaled (not clipped) to 8 bit and float grey is scaled by
    its own range. Raises :class:`ImageError` with a short reason if the data is not a readable image,
    is truncated, or exceeds ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    name = None if _is_file_object(path_or_file) else os.fspath(path_or_file)
    try:
        if name is None:
            return _decode(path_or_file)
        try:
            fp = open(name, "rb")
        except OSError as e:
            raise ImageError(f"unreadable: {e.strerror or e}") from e
        with fp:
            if os.fstat(fp.fileno()).st_size == 0:
                raise ImageError(REASON_EMPTY)
            return _decode(fp)
    except ImageError as e:
        if e.path is None and name is not None:
            e.path = name
            e.args = (e.reason, name)
        raise


def check_image(path: str | os.PathLike) -> str | None:
    """Fully decode the image at ``path``; return None if it is usable, else a short reason.

    Reasons: "empty file", "not an image", "truncated or corrupt image", "decompression bomb (over
    Pillow's pixel limit)" or "unreadable: <message>". Never raises for a bad file.
    """
    try:
        load_rgb(path)
    except ImageError as e:
        return e.reason
    except Exception as e:  # a Pillow bug on a strange file must not stop a whole scan
        return f"unreadable: {type(e).__name__}: {e}"
    return None


def _is_file_object(obj) -> bool:
    return hasattr(obj, "read") and not isinstance(obj, (str, bytes, os.PathLike))


def _decode(fp) -> Image.Image:
    """Open, check and fully decode from an open binary file; always returns a new image."""
    try:
        img = Image.open(fp)
    except UnidentifiedImageError as e:
        if _at_empty_stream(fp):
            raise ImageError(REASON_EMPTY) from e
        raise ImageError(REASON_NOT_IMAGE) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The warning arrives as an exception when a warnings filter says "error".
        raise ImageError(REASON_BOMB) from e
    except _DECODE_ERRORS as e:
        raise ImageError(REASON_CORRUPT) from e
    with img:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; tlkit refuses both. Checking the
        # size here rather than via a warnings filter keeps this safe to call from several threads.
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and img.width * img.height > limit:
            raise ImageError(REASON_BOMB)
        try:
            img.load()  # decode every byte now, so truncated files fail here and not in a DataLoader
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(REASON_BOMB) from e
        except _DECODE_ERRORS as e:
            raise ImageError(REASON_CORRUPT) from e
        if img.width == 0 or img.height == 0:
            raise ImageError(REASON_CORRUPT)
        img = _apply_exif_orientation(img)
        try:
            return _to_rgb(img)
        except (ValueError, OSError) as e:  # a mode Pillow reads but cannot convert
            raise ImageError(f"unreadable: cannot convert mode {img.mode} to RGB ({e})") from e


def _at_empty_stream(fp) -> bool:
    try:
        fp.seek(0, os.SEEK_END)
        return fp.tell() == 0
    except (OSError, AttributeError, ValueError):
        return False


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        rotated = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF blocks are common and do not make the pixels unusable
        return img
    return img if rotated is None else rotated


_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Return a new RGB image from a loaded image of any mode."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return _scale_to_8bit(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        if mode == "La":  # premultiplied grey: Pillow converts it only to LA
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map high bit-depth grey to "L" by dividing by the largest value of its type."""
    arr = np.asarray(img)
    mode = img.mode
    if mode == "F":
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 0.0
        arr = np.where(finite, arr, lo)
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        arr = arr.astype(np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        elif arr.size == 0 or arr.max() <= 65535:
            # Pillow hands some 16-bit PNGs and TIFFs over as 32-bit "I"; values that fit in 16 bits
            # are read as 16-bit data, or they would all come out nearly black.
            top = 65535.0
        else:
            top = float(2**31 - 1)
        scaled = np.clip(arr, 0, None) / top * 255.0
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out if out.ndim == 2 else out[..., 0])
