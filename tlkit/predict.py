"""``tlkit predict`` and the demo's Predict tab: top-k labels for images with a trained run."""

from __future__ import annotations

import threading

import torch

from tlkit.errors import TlkitError


class Predictor:
    """A loaded model plus its preprocessing; thread-safe for the demo server."""

    def __init__(self, model, run_dir=None):
        from tlkit.transforms import eval_transform

        self.model = model.eval()
        self.run_dir = run_dir
        self.transform = eval_transform(model.image_size, model.mean, model.std)
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir) -> "Predictor":
        from tlkit.runs import load_model

        return cls(load_model(run_dir), run_dir)

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @torch.inference_mode()
    def probabilities(self, images) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)`` for a list of PIL RGB images."""
        batch = torch.stack([self.transform(image) for image in images])
        with self._lock:  # one forward at a time: torch already uses every core for one batch
            logits = self.model(batch)
        return torch.softmax(logits.float(), dim=1)

    def top_k(self, image, k: int = 3) -> list[dict]:
        """``[{"label": str, "probability": float}, ...]`` for one PIL image, best first."""
        return self._top(self.probabilities([image])[0], k)

    def _top(self, probs, k):
        k = max(1, min(int(k), len(self.class_names)))
        values, indices = probs.topk(k)
        return [{"label": self.class_names[i], "probability": float(v)} for v, i in zip(values, indices)]

    def predict_files(self, paths, *, top_k: int = 3, batch_size: int = 16) -> list[dict]:
        """One ``{"image": path, "predictions": [...]}`` per path; unreadable files get ``"error"``."""
        from tlkit.images import load_rgb

        if top_k < 1:
            raise TlkitError(f"--top-k must be at least 1, got {top_k}")
        results, pending = [], []
        for path in paths:
            entry = {"image": str(path)}
            try:
                pending.append((entry, load_rgb(path)))
            except (TlkitError, OSError) as exc:
                entry["error"] = str(exc)
            results.append(entry)
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            for (entry, _), probs in zip(chunk, self.probabilities([image for _, image in chunk])):
                entry["predictions"] = self._top(probs, top_k)
        return results
