"""``tlkit evaluate``: accuracy, per-class precision and recall, and the confusion matrix of a run."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tlkit.errors import TlkitError


@torch.no_grad()
def predict_loader(model, loader, *, device="cpu", progress=False, desc="evaluating"):
    """Run ``model`` over a loader of ``(images, labels)``; returns (probabilities, labels) as numpy."""
    from tqdm.auto import tqdm

    model.eval().to(device)
    probs, labels = [], []
    for images, targets in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, leave=False):
        probs.append(torch.softmax(model(images.to(device)).float(), dim=1).cpu())
        labels.append(targets)
    if not probs:
        return np.zeros((0, getattr(model, "num_classes", 0))), np.zeros(0, dtype=int)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return matrix


def samples_confusion(model, samples, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Confusion matrix of ``model`` on ``samples`` (labels in the model's class order), eval transform."""
    from tlkit.data import ImageDataset
    from tlkit.transforms import eval_transform

    dataset = ImageDataset(samples, eval_transform(model.image_size, model.mean, model.std))
    probs, labels = predict_loader(model, DataLoader(dataset, batch_size=batch_size), progress=progress)
    return confusion_matrix(labels, probs.argmax(axis=1), model.num_classes)


@dataclass
class EvaluationReport:
    class_names: list[str]
    matrix: np.ndarray
    split: str
    data_dir: str
    skipped: list = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return int(self.matrix.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.matrix) / self.matrix.sum()) if self.matrix.sum() else 0.0

    def per_class(self) -> dict[str, dict]:
        result = {}
        for i, name in enumerate(self.class_names):
            predicted, actual, hits = self.matrix[:, i].sum(), self.matrix[i, :].sum(), self.matrix[i, i]
            result[name] = {
                "precision": float(hits / predicted) if predicted else None,
                "recall": float(hits / actual) if actual else None,
                "support": int(actual),
            }
        return result

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "num_images": self.num_images,
            "split": self.split,
            "data_dir": self.data_dir,
            "classes": self.class_names,
            "per_class": self.per_class(),
            "confusion_matrix": self.matrix.tolist(),
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }

    def text(self) -> str:
        width = max(9, *(len(n) for n in self.class_names))
        lines = [f"accuracy {self.accuracy:.1%} on {self.num_images} images ({self.split} of {self.data_dir})",
                 "", f"{'class'.ljust(width)}  precision  recall  support"]
        for name, row in self.per_class().items():
            def pct(value):
                return "    n/a" if value is None else f"{value:7.1%}"
            lines.append(f"{name.ljust(width)}  {pct(row['precision']):>9}  {pct(row['recall']):>6}  {row['support']:>7}")
        lines += ["", "confusion matrix (rows: true, columns: predicted)",
                  " " * (width + 2) + " ".join(n[:6].rjust(6) for n in self.class_names)]
        for name, row in zip(self.class_names, self.matrix):
            lines.append(f"{name.ljust(width)}  " + " ".join(str(v).rjust(6) for v in row))
        if self.skipped:
            lines.append(f"\nskipped {len(self.skipped)} unreadable files")
        return "\n".join(lines)


def evaluate_run(run_dir, data_dir, *, batch_size: int = 32, progress: bool = True) -> EvaluationReport:
    """Evaluate a run on an image folder.

    A ``train/val[/test]`` folder is evaluated on ``test`` (else ``val``); a ``<class>/*`` folder on
    every image. Class folders are matched to the run's classes by name; a class the model does not
    know is an error.
    """
    from tlkit.data import Sample, scan_image_folder
    from tlkit.runs import load_model

    model = load_model(run_dir)
    scan = scan_image_folder(data_dir, progress=progress)
    if scan.layout == "split":
        split = "test" if scan.splits.get("test") else "val"
        samples = scan.splits[split]
    else:
        split = "all"
        samples = [s for part in scan.splits.values() for s in part]
    unknown = sorted(set(scan.class_names) - set(model.class_names))
    if unknown:
        raise TlkitError(f"{data_dir} has classes the model was not trained on: {', '.join(unknown)}; "
                         f"the run knows: {', '.join(model.class_names)}")
    index = {name: i for i, name in enumerate(model.class_names)}
    samples = [Sample(s.path, index[scan.class_names[s.label]]) for s in samples]
    matrix = samples_confusion(model, samples, batch_size=batch_size, progress=progress)
    return EvaluationReport(list(model.class_names), matrix, split, str(Path(data_dir)), scan.skipped)
