"""Lightning callbacks of ``tlkit fit``: the metrics recorder and the best-weights keeper."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytorch_lightning as pl

from tlkit.runs import METRICS_FILE, read_metrics, write_json


def _scalar(metrics, key):
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class MetricsRecorder(pl.Callback):
    """Rewrites ``metrics.json`` (and ``curves.png``) after every epoch, so a killed run keeps them.

    Epochs are counted from 0 and recorded once each: after ``--resume`` the epochs from the resumed
    one onwards are dropped before they are run again.
    """

    def __init__(self, run_dir, *, plot: bool = True, title: str = ""):
        self.run_dir = Path(run_dir)
        self.plot = plot
        self.title = title
        self.epochs: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        # called after a checkpoint was restored, so current_epoch is where this run starts
        previous = read_metrics(self.run_dir) or {}
        start = trainer.current_epoch
        self.epochs = [e for e in previous.get("epochs", []) if e.get("epoch", 0) < start]

    def on_train_epoch_start(self, trainer, pl_module):
        # read before the scheduler steps at the epoch's end: the rates this epoch trained with
        self._lr = [group["lr"] for group in trainer.optimizers[0].param_groups] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        record = {
            "epoch": int(trainer.current_epoch),
            "train_loss": _scalar(metrics, "train_loss_epoch") or _scalar(metrics, "train_loss"),
            "train_accuracy": _scalar(metrics, "train_accuracy"),
            "val_loss": _scalar(metrics, "val_loss"),
            "val_accuracy": _scalar(metrics, "val_accuracy"),
            "backbone_frozen": bool(getattr(pl_module, "backbone_frozen", lambda: False)()),
            "lr": getattr(self, "_lr", None),
        }
        self.epochs = [e for e in self.epochs if e["epoch"] != record["epoch"]] + [record]
        if trainer.is_global_zero:
            self.write()

    def document(self) -> dict:
        scored = [e for e in self.epochs if e.get("val_loss") is not None]
        best = min(scored, key=lambda e: e["val_loss"], default=None)
        return {
            "epochs": self.epochs,
            "best": None if best is None else {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
                                                "val_loss": best["val_loss"], "selected_by": "val_loss"},
        }

    def write(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / METRICS_FILE, self.document())
        if self.plot and self.epochs:
            from tlkit.plots import save_learning_curves

            save_learning_curves(self.epochs, self.run_dir / "curves.png", title=self.title)


class BestWeights(pl.Callback):
    """Keeps a CPU copy of the network's weights at the lowest validation loss.

    Its state is stored in ``last.ckpt``, so a resumed run still knows its best epoch.
    """

    def __init__(self):
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        loss = _scalar(trainer.callback_metrics, "val_loss")
        if loss is not None and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, int(trainer.current_epoch)
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.model.state_dict().items()}

    def restore(self, model) -> None:
        """Load the best weights into ``model`` (no-op when no epoch finished validation)."""
        if self.state is not None:
            model.load_state_dict(self.state)

    def state_dict(self):
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict):
        self.best_loss = state_dict.get("best_loss", math.inf)
        self.best_epoch = state_dict.get("best_epoch")
        self.state = copy.copy(state_dict.get("state"))
