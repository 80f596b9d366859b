"""Image folders: find the classes and files, check every image, split, and serve them to Lightning.

Two layouts are accepted (see the contract):

* split: ``root/train/<class>/*`` and ``root/val/<class>/*`` (``valid`` or ``validation`` also work),
  optionally ``root/test/<class>/*``. With ``train/`` alone, validation images are split off it.
* flat: ``root/<class>/*``, split into train and val by ``val_split``, stratified per class and seeded.

Bad files are skipped and recorded (:class:`SkippedFile`), never fatal on their own.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tlkit.errors import TlkitError
from tlkit.images import check_image, is_image_file, load_rgb

__all__ = [
    "ImageDataset",
    "ImageFolderDataModule",
    "Sample",
    "ScanResult",
    "SkippedFile",
    "default_num_workers",
    "scan_image_folder",
]

VAL_DIR_NAMES = ("val", "valid", "validation")
REASON_BAD_EXTENSION = "not an image file extension"
REASON_NO_CLASS = "not inside a class folder"

# Below this many files a progress bar is more noise than help.
_PROGRESS_MIN_FILES = 200
# Fewer training images than this load faster in the main process than worker start-up takes.
_MIN_IMAGES_FOR_WORKERS = 64


@dataclass
class Sample:
    """One usable image: its path and the index of its class in ``ScanResult.class_names``."""

    path: str
    label: int


@dataclass
class SkippedFile:
    """A file left out of the data, with a short reason such as "truncated or corrupt image"."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """What :func:`scan_image_folder` found.

    ``splits`` maps "train", "val" and optionally "test" to samples; ``layout`` is "split" or "flat".
    """

    class_names: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[SkippedFile]
    layout: str
    root: str = ""
    skipped_record: str | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class name in ``split`` (every class listed, zero included)."""
        counts = {name: 0 for name in self.class_names}
        for sample in self.splits.get(split, []):
            counts[self.class_names[sample.label]] += 1
        return counts

    def write_skipped(self, path: str | os.PathLike) -> Path:
        """Write the skipped files as CSV (header ``path,reason``) to ``path``; returns the path.

        The file is written even when nothing was skipped, so a run folder always has the record.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            for item in self.skipped:
                writer.writerow([item.path, item.reason])
        self.skipped_record = str(path)
        return path

    def summary(self) -> str:
        """One line, e.g. "912 images in 3 classes (train 730, val 182); skipped 3 files (see skipped.csv)".

        The "(see ...)" part names the file of the last :meth:`write_skipped` call, if any.
        """
        sizes = ", ".join(f"{name} {len(samples)}" for name, samples in self.splits.items())
        total = sum(len(samples) for samples in self.splits.values())
        line = f"{total} images in {len(self.class_names)} classes ({sizes})"
        if self.skipped:
            n = len(self.skipped)
            line += f"; skipped {n} file{'s' if n != 1 else ''}"
            if self.skipped_record:
                line += f" (see {os.path.basename(self.skipped_record)})"
        return line


def scan_image_folder(
    root: str | os.PathLike, *, val_split: float = 0.2, seed: int = 0, progress: bool = True
) -> ScanResult:
    """Find classes and usable images under ``root``; split them into train/val(/test).

    ``root`` is either layout described in the module docstring. Every candidate image is fully
    decoded once (in threads) so broken files end up in ``skipped`` with a reason. ``val_split`` (a
    fraction in (0, 1)) and ``seed`` only matter where validation images must be split off; the split
    is stratified per class and the same for the same files and seed. A progress bar goes to stderr
    when ``progress`` is true and there are many files. Raises :class:`~tlkit.errors.TlkitError` with
    a one-line message when the folder cannot give a training set.
    """
    _check_val_split(val_split)
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root_path.exists():
        raise TlkitError(
            f"data folder {root_path} does not exist: check the path "
            "(or leave DATA_DIR out to train on the built-in sample data)"
        )
    if not root_path.is_dir():
        raise TlkitError(
            f"{root_path} is not a directory: pass a folder with one subfolder of images per class"
        )

    top = _subdirs(root_path)
    top_names = {p.name for p in top}
    val_name = next((n for n in VAL_DIR_NAMES if n in top_names), None)
    # A lone "train" folder next to other class folders is a class called "train", not a split.
    is_split = "train" in top_names and (
        val_name is not None or "test" in top_names or top_names == {"train"}
    )

    skipped: list[SkippedFile] = []
    if is_split:
        train_dir = root_path / "train"
        class_names = [p.name for p in _subdirs(train_dir)]
        if not class_names:
            raise TlkitError(
                f"no class folders in {train_dir}: put the training images in {train_dir}/<class>/"
            )
        skipped += _stray_images(root_path) + _stray_images(train_dir)
        part_dirs = {"train": train_dir}
        for part, name in (("val", val_name), ("test", "test" if "test" in top_names else None)):
            if name is None:
                continue
            part_dir = root_path / name
            extra = sorted({p.name for p in _subdirs(part_dir)} - set(class_names))
            if extra:
                listed = ", ".join(repr(n) for n in extra)
                raise TlkitError(
                    f"{part_dir} has class folder(s) {listed} that {train_dir} lacks: "
                    "add training images for them or remove them"
                )
            skipped += _stray_images(part_dir)
            part_dirs[part] = part_dir
        files = {
            (part, name): _list_files(d / name)
            for part, d in part_dirs.items()
            for name in class_names
            if (d / name).is_dir()
        }
    else:
        class_names = [p.name for p in top]
        if not class_names:
            hint = (
                " (the images lie directly in it: move them into one subfolder per class)"
                if any(is_image_file(p) for p in root_path.iterdir())
                else ""
            )
            raise TlkitError(
                f"no class folders in {root_path}{hint}: expected {root_path}/<class>/*.jpg, "
                f"or {root_path}/train/<class>/ and {root_path}/val/<class>/"
            )
        skipped += _stray_images(root_path)
        files = {("all", name): _list_files(root_path / name) for name in class_names}

    usable, bad = _check_files(files, progress=progress)
    skipped += bad
    skipped.sort(key=lambda s: s.path)

    label_of = {name: i for i, name in enumerate(class_names)}
    first_part = "train" if is_split else "all"
    for name in class_names:
        if not usable.get((first_part, name)):
            raise TlkitError(_no_usable_message(name, first_part, root_path, files, bad))
    if len(class_names) < 2:
        raise TlkitError(
            f"only one class ({class_names[0]!r}) in {root_path}: a classifier needs at least 2 class "
            "folders with images"
        )

    splits: dict[str, list[Sample]] = {}
    if is_split:
        for part in ("train", "val", "test"):
            if part in part_dirs:
                splits[part] = [
                    Sample(p, label_of[name]) for name in class_names for p in usable.get((part, name), [])
                ]
        if "val" not in splits:
            splits["train"], splits["val"] = _stratified_split(splits["train"], class_names, val_split, seed)
            splits = {k: splits[k] for k in ("train", "val", "test") if k in splits}
        elif not splits["val"]:
            raise TlkitError(
                f"{root_path / val_name} has no usable images: add images to {root_path / val_name}/<class>/ "
                "or remove that folder to split validation images off train"
            )
        if "test" in splits and not splits["test"]:
            del splits["test"]  # an empty test folder is as good as none
    else:
        everything = [Sample(p, label_of[name]) for name in class_names for p in usable[("all", name)]]
        splits["train"], splits["val"] = _stratified_split(everything, class_names, val_split, seed)

    if not splits["val"]:
        raise TlkitError(
            f"the validation split of {root_path} is empty (every class has a single image): "
            "add images, or give a train/ and val/ folder"
        )
    return ScanResult(
        class_names=class_names,
        splits=splits,
        skipped=skipped,
        layout="split" if is_split else "flat",
        root=str(root_path),
    )


def _check_val_split(val_split) -> None:
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0 < val_split < 1:
        raise TlkitError(
            f"--val-split must be a fraction between 0 and 1 (exclusive), got {val_split!r}: try 0.2"
        )


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden subfolders, sorted by name."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise TlkitError(f"cannot read {folder}: {e.strerror or e}: check its permissions") from e
    return sorted(
        (Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()), key=lambda p: p.name
    )


def _list_files(folder: Path) -> list[str]:
    """All non-hidden files under ``folder`` (recursively, following links once), sorted."""
    found = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found)


def _stray_images(folder: Path) -> list[SkippedFile]:
    """Image files lying next to the class folders, where they have no class; other files are ignored."""
    try:
        return [
            SkippedFile(e.path, REASON_NO_CLASS)
            for e in sorted(os.scandir(folder), key=lambda e: e.name)
            if not e.name.startswith(".") and e.is_file() and is_image_file(e.name)
        ]
    except OSError:
        return []


def _check_files(
    files: dict[tuple[str, str], list[str]], *, progress: bool
) -> tuple[dict[tuple[str, str], list[str]], list[SkippedFile]]:
    """Decode every candidate image in threads; return usable paths per key and the skipped files."""
    skipped: list[SkippedFile] = []
    candidates: list[tuple[tuple[str, str], str]] = []
    for key, paths in files.items():
        for p in paths:
            if is_image_file(p):
                candidates.append((key, p))
            else:
                skipped.append(SkippedFile(p, REASON_BAD_EXTENSION))

    bar = None
    if progress and len(candidates) > _PROGRESS_MIN_FILES:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(candidates), desc="Checking images", unit="img", file=sys.stderr, leave=False)

    def check(item):
        reason = check_image(item[1])
        if bar is not None:
            bar.update(1)
        return reason

    # Pillow releases the GIL while decoding, so threads give a real speed-up on many-core machines.
    workers = max(1, min(16, (_available_cpus() or 1) + 2))
    usable: dict[tuple[str, str], list[str]] = {key: [] for key in files}
    try:
        with warnings.catch_warnings():
            # Bombs are reported as skipped files by check_image; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                reasons = list(pool.map(check, candidates))
    finally:
        if bar is not None:
            bar.close()
    for (key, path), reason in zip(candidates, reasons):
        if reason is None:
            usable[key].append(path)
        else:
            skipped.append(SkippedFile(path, reason))
    return usable, skipped


def _no_usable_message(name, part, root, files, bad: list[SkippedFile]) -> str:
    where = root / "train" / name if part == "train" else root / name
    paths = set(files.get((part, name), []))
    reasons = [s for s in bad if s.path in paths]
    if not paths:
        detail = "the folder is empty"
    else:
        example = reasons[0]
        detail = (
            f"{len(reasons)} skipped: see the skipped-files record, e.g. "
            f"{os.path.basename(example.path)}: {example.reason}"
        )
    return (
        f"class {name!r} has no usable images ({detail}) in {where}: "
        "add readable images or remove the folder"
    )


def _stratified_split(
    samples: list[Sample], class_names: list[str], val_split: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split per class: round(n * val_split) images to val, at least 1 when n >= 2, none when n == 1."""
    train, val = [], []
    for label, name in enumerate(class_names):
        group = sorted((s for s in samples if s.label == label), key=lambda s: s.path)
        n = len(group)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(n * val_split)))
        # Seeded per class by name, so adding a class does not reshuffle the others.
        order = list(range(n))
        random.Random(f"{seed}:{name}").shuffle(order)
        chosen = set(order[:n_val])
        for i, s in enumerate(group):
            (val if i in chosen else train).append(s)
    return train, val


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_workers(num_images: int, *, cuda: bool | None = None) -> int:
    """DataLoader worker processes for ``num_images`` training images on this machine.

    0 below 64 images: starting workers would cost more than they save. On a CPU the model consumes
    images 15-75x slower than one process decodes and augments them (``bench/input_pipeline.py``),
    so ``min(4, CPUs - 1)`` keeps it fed without taking its cores. A GPU consumes them much faster:
    ``min(8, CPUs - 1)``. ``cuda=None`` asks torch whether CUDA is available.
    """
    if num_images < _MIN_IMAGES_FOR_WORKERS:
        return 0
    if cuda is None:
        cuda = torch.cuda.is_available()
    return max(0, min(8 if cuda else 4, _available_cpus() - 1))


class ImageDataset(Dataset):
    """A list of :class:`Sample` read through :func:`~tlkit.images.load_rgb`.

    ``dataset[i]`` is ``(transform(rgb_pil_image), label)``; with ``transform=None`` the PIL image itself.
    """

    def __init__(self, samples: Iterable[Sample], transform: Callable | None = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_rgb(sample.path)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label


class ImageFolderDataModule(pl.LightningDataModule):
    """Lightning data for a :class:`ScanResult`: train/val/test/predict loaders with the given transforms.

    ``num_workers=None`` picks :func:`default_num_workers`: ``min(4, CPUs - 1)`` (``min(8, CPUs - 1)``
    with CUDA), or 0 for fewer than 64 training images (worker start-up would cost more than it
    saves). Workers persist across epochs. ``pin_memory=None`` pins when CUDA is available. The test
    and predict loaders use the test split when there is one, else the validation split.
    """

    def __init__(
        self,
        scan: ScanResult,
        *,
        train_transform: Callable | None,
        eval_transform: Callable | None,
        batch_size: int = 32,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise TlkitError(f"--batch-size must be at least 1, got {batch_size}")
        self.scan = scan
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.batch_size = int(batch_size)
        if num_workers is None:
            num_workers = default_num_workers(len(scan.splits.get("train", [])))
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.scan.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.scan.class_names)

    @property
    def has_test(self) -> bool:
        return bool(self.scan.splits.get("test"))

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage ("fit", "validate", "test", "predict"; None = all) needs."""
        eval_split = "test" if self.has_test else "val"
        if stage in (None, "fit"):
            self.datasets["train"] = ImageDataset(self.scan.splits["train"], self.train_transform)
        if stage in (None, "fit", "validate"):
            self.datasets["val"] = ImageDataset(self.scan.splits["val"], self.eval_transform)
        if stage in (None, "test", "predict"):
            self.datasets["test"] = ImageDataset(self.scan.splits[eval_split], self.eval_transform)

    def _dataset(self, name: str) -> ImageDataset:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        return self.datasets[name]

    def _loader(self, dataset: Dataset, *, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled; drops the last batch only when it would hold a single image (BatchNorm fails on 1)."""
        dataset = self._dataset("train")
        world = 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            world = max(1, int(getattr(trainer, "world_size", 1) or 1))
        per_process = math.ceil(len(dataset) / world)  # DDP gives each process its share
        drop_last = per_process > 1 and per_process % self.batch_size == 1
        return self._loader(dataset, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), shuffle=False)
